"""MLflow pyfunc wrapper around an engine bundle.

``mlflow.pyfunc.load_model("models:/NAME@champion").predict(["some query", ...])`` returns a DataFrame
with the predicted ``label`` and its ``score`` (softmax probability) per text. The bundle travels as the
model's artifact and is verified (checksums, runtime compatibility, golden set) when the model loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel

from enginekit.runtime import EngineRuntime, classify, load_engine

BUNDLE_ARTIFACT = "bundle"


def texts_from_input(model_input: Any) -> tuple[list[str], list[str] | None]:
    """Accept a list of strings, a pandas Series, a DataFrame (column ``text`` [+ ``text_pair``] or a
    single column), or a dict of lists."""
    if isinstance(model_input, dict):
        model_input = pd.DataFrame(model_input)
    if isinstance(model_input, pd.DataFrame):
        if "text" in model_input.columns:
            pairs = model_input["text_pair"].tolist() if "text_pair" in model_input.columns else None
            texts = model_input["text"].tolist()
        elif len(model_input.columns) == 1:
            texts, pairs = model_input.iloc[:, 0].tolist(), None
        else:
            raise ValueError(f"expected a 'text' column, got columns {list(model_input.columns)}")
    elif isinstance(model_input, pd.Series | list | tuple):
        texts, pairs = list(model_input), None
    elif isinstance(model_input, str):
        texts, pairs = [model_input], None
    else:
        raise TypeError(f"expected a list of texts or a DataFrame, got {type(model_input).__name__}")
    bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if bad:
        raise TypeError(f"inputs at positions {bad[:5]} are not strings")
    return texts, pairs


class EngineModel(PythonModel):
    def load_context(self, context: Any) -> None:
        self._engine: EngineRuntime = load_engine(Path(context.artifacts[BUNDLE_ARTIFACT]))

    # No type hints here on purpose: MLflow turns predict's hints into schema enforcement, and the
    # logged signature (see tasks.register) already describes the input.
    def predict(self, context, model_input, params=None):
        texts, pairs = texts_from_input(model_input)
        results = classify(self._engine, texts, pairs)
        return pd.DataFrame({"label": [label for label, _ in results], "score": [score for _, score in results]})
