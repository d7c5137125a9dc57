"""What every width study shares: its ``[study]`` table, its output folder, and reading its TOML file.

A study's configuration is a model of sections like the spectrum job's `ntkdist.config.Config`, validated and
explained the same way (`ntkdist.config.explain`); its ``[study]`` table names the study and says which kind it
is, so `load_study` (and ``ntkdist study CONFIG``) can tell a finite-width study from a linearity one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

from pydantic import Field, ValidationError, model_validator

from ..config import _Section, explain, read_toml, storage_root
from ..errors import ConfigError

#: The kinds of study, as ``[study] kind`` names them.
StudyKind = Literal["finite_width", "linearity"]
STUDY_KINDS = get_args(StudyKind)


class StudySection(_Section):
    kind: StudyKind = Field(description="which study: finite_width (Monte Carlo over networks, finite-width "
                                        "spectra, Nguyen's λ_min) or linearity (Hessian norm and kernel change "
                                        "against width)")
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                      description="the study's name: letters, digits, . _ - (names its output folder)")
    output: str | None = Field(default=None, description="folder of the datasets and the report; default "
                               "$NTKDIST_STORAGE (or ./storage)/studies/NAME")

    @property
    def folder(self) -> Path:
        """Where the study writes its datasets and report."""
        if self.output:
            return Path(self.output).expanduser().resolve()
        return (storage_root() / "studies" / self.name).resolve()


class StudyConfig(_Section):
    """Base of a study's configuration: the ``[study]`` table, validation with explained errors, a plain dict."""

    #: The ``[study] kind`` this configuration is for (set by each subclass).
    KIND: ClassVar[str] = ""
    study: StudySection

    @model_validator(mode="after")
    def _its_kind(self):
        if self.study.kind != self.KIND:
            raise ValueError(f"study: kind is {self.study.kind!r}, but this is a {self.KIND!r} study's "
                             "configuration; run the file with `ntkdist study CONFIG.toml`, which picks the study "
                             "by its kind")
        return self

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = ""):
        """Validate a parsed TOML document; raises `ConfigError` naming every bad key."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{source or 'configuration'}: expected a table of sections, got {type(raw).__name__}")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(explain(exc, source, model=cls)) from None

    @property
    def output(self) -> Path:
        """The study's output folder (``[study] output``, else storage/studies/NAME)."""
        return self.study.folder

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def study_kind(path) -> str:
    """The ``[study] kind`` of a study's TOML file (`ConfigError` naming the fix if it has none)."""
    raw = read_toml(path)
    kind = raw["study"].get("kind") if isinstance(raw.get("study"), dict) else None
    if kind not in STUDY_KINDS:
        raise ConfigError(f"{path}: [study] kind must be one of {', '.join(STUDY_KINDS)} (got {kind!r}); a spectrum "
                          "job's configuration runs with `ntkdist run` instead")
    return kind
