"""A progressive test model: the toy MR model as a 3-member "ensemble" whose first member sees
everything as bright (urgent) and whose full ensemble is the toy's real answer.

It drives the pipeline's preliminary path deterministically with no built pack beyond the toy's:
a preliminary result that puts a dark study on top, then a final one that clears it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from app.core.models import ModelSpecs, default_specs
from tests.support.toy_model import MrVolume, ToyMrSpec, ToyOutput, ToyRuntime

MEMBERS = 3


@dataclass
class ToyEnsembleOutput(ToyOutput):
    members: int = MEMBERS


@dataclass(frozen=True)
class ToyEnsembleSpec(ToyMrSpec):
    def run(self, runtime: ToyRuntime, model_input: MrVolume) -> ToyEnsembleOutput:
        out = runtime.analyse(model_input)
        return ToyEnsembleOutput(out.probability, out.device, out.fallback_note, out.timings)

    def run_progressive(self, runtime: ToyRuntime, model_input: MrVolume,
                        on_partial: Callable[[int, int, Any], None]) -> ToyEnsembleOutput:
        final = self.run(runtime, model_input)
        first = replace(final, probability=np.ones_like(final.probability), members=1)   # "all bright"
        on_partial(1, MEMBERS, first)
        on_partial(2, MEMBERS, replace(final, members=2))
        return final


def specs_with_toy_ensemble() -> ModelSpecs:
    return default_specs().with_spec(ToyEnsembleSpec())
