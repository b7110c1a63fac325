"""Execution profiles: how big every experiment in the book is.

``TLBOOK_PROFILE`` selects one of ``smoke`` (CI, seconds per chapter), ``quick``
(a laptop: at most 10 minutes per chapter on 2 CPU cores) and ``full`` (a GPU, full datasets,
the networks' own resolution). Unset, the
profile is ``full`` on a CUDA machine and ``quick`` elsewhere.
"""

from __future__ import annotations

import dataclasses

from . import settings
from .errors import ProfileError

ENV_VAR = settings.PROFILE


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes of one execution profile.

    ``None`` for a per-class count means "all images of the split".
    """

    name: str
    train_per_class: int | None
    test_per_class: int | None
    epochs: int
    image_size: int
    batch_size: int
    label_budgets: tuple[int, ...]
    description: str
    val_per_class: int = 50  # validation images per class, carved from the training split
    photo_size: int = 224  # pixels of the colour photos (companion.photos)
    repeats: int = 3  # repeated splits or seeds where a chapter reports a spread

    def __str__(self) -> str:
        per = lambda n: "all" if n is None else str(n)  # noqa: E731
        return (
            f"profile {self.name!r}: {per(self.train_per_class)} train / {self.val_per_class} validation / "
            f"{per(self.test_per_class)} test images per class, {self.epochs} epochs, {self.image_size} px, batch {self.batch_size}"
        )

    def check(
        self, claim: str, holds: bool, *, applies_in: tuple[str, ...] = ("smoke", "quick", "full"), value: str = ""
    ) -> bool:
        """Assert a claim of the text in the profiles where it applies, and say so either way.

        Some claims need the data, pixels and epochs of a larger profile to mean anything (a
        quality bar of 0.90 on 20 images per class would test luck). ``applies_in`` names the
        profiles whose sizes the claim is made for. Prints one line, which the published edition
        lists in the page's provenance::

            [claim] fine-tuning beats the linear probe (0.843 vs 0.812): holds
            [claim] probe >= 0.85 (0.812): not checked in 'quick' (applies in full)

        Raises:
            AssertionError: the claim applies to this profile and does not hold.
        """
        applies = self.name in applies_in
        shown = f"{claim} ({value})" if value else claim
        state = (
            ("holds" if holds else "FAILS")
            if applies
            else f"not checked in {self.name!r} (applies in {', '.join(applies_in)})"
        )
        print(f"[claim] {shown}: {state}")
        if applies and not holds:
            raise AssertionError(f"{shown} does not hold in the {self.name!r} profile")
        return holds


# name, train / validation / test images per class, epochs, pixels, batch, label budgets,
# photo pixels, repeats, description
_ROWS = [
    ("smoke", 20, 10, 20, 3, 64, 50, (5, 20), 96, 2,
     "CI and nbval: tiny real subsets, each chapter in about a minute or less on 2 CPU cores"),
    ("quick", 50, 50, 100, 4, 96, 32, (10, 50), 224, 3,
     "the default without CUDA (a laptop, Binder): each chapter in at most 10 minutes on 2 CPU cores, 50 "
     "labelled real images per class at 96 px, enough to show and assert each chapter's lesson"),
    ("full", None, 500, None, 15, 224, 128, (10, 50, 200, 1000), 224, 10, "a GPU: full datasets at full resolution"),
]  # fmt: skip
PROFILES: dict[str, Profile] = {
    name: Profile(
        name, train, test, epochs, size, batch, budgets, about, val_per_class=val, photo_size=photo, repeats=repeats
    )
    for name, train, val, test, epochs, size, batch, budgets, photo, repeats, about in _ROWS
}


def _default_name() -> str:
    import torch

    return "full" if torch.cuda.is_available() else "quick"


def get_profile(name: str | None = None) -> Profile:
    """Return the profile ``name``, else the one ``TLBOOK_PROFILE`` names, else the default.

    Raises:
        ProfileError: the name is not one of ``smoke``, ``quick``, ``full``.
    """
    chosen = name or settings.profile() or _default_name()
    key = chosen.strip().lower()
    if key not in PROFILES:
        source = "argument" if name else f"environment variable {ENV_VAR}"
        raise ProfileError(
            f"unknown profile {chosen!r} (from the {source}); choose one of "
            f"{', '.join(PROFILES)}, e.g. `export {ENV_VAR}=quick`"
        )
    return PROFILES[key]
