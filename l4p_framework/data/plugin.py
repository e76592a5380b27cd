"""The core's own plugin: registers synth4d and the public-format readers as datasets."""

from __future__ import annotations

from ..hooks import hookimpl
from ..specs import DatasetSpec


@hookimpl
def l4p_datasets() -> list[DatasetSpec]:
    from .readers import reader_specs
    from .synth4d import synth4d_spec

    return [synth4d_spec(), *reader_specs()]
