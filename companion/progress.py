"""The progress bar class: tqdm's notebook bars where ipywidgets is installed, else plain
text bars (tqdm.auto would warn in a notebook without ipywidgets)."""

try:
    import ipywidgets  # noqa: F401
    from tqdm.auto import tqdm
except ImportError:
    from tqdm.std import tqdm

__all__ = ["tqdm"]
