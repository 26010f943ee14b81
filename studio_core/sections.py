"""The base of every config section (`studio_core.config` and each method's in `studio_core.methods`)."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every step's section: strict about unknown keys so typos are caught."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
