"""Loading local Hugging Face models for scoring (safetensors, no remote code, no hub)."""

from __future__ import annotations

from pathlib import Path

from ecoeval import EcoevalError


def _check_dir(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir() or not (path / "config.json").is_file():
        raise EcoevalError(f"{what} {path}: expected a save_pretrained folder with config.json")
    return path


def load_tokenizer(*candidates: Path):
    """The tokenizer of the first folder that has one (a finetuned folder may lack it)."""
    from transformers import AutoTokenizer

    errors = []
    for folder in candidates:
        try:
            tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, TypeError) as exc:
            errors.append(f"{folder}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            continue
        if len(tok) <= 5:
            errors.append(f"{folder}: tokenizer has only {len(tok)} tokens")
            continue
        return tok
    raise EcoevalError(f"tokenizer {candidates[0]}: no usable tokenizer found ({'; '.join(errors)})")


def load_masked_lm(path: Path):
    """(model, tokenizer) of a local masked LM folder, in eval mode."""
    from transformers import AutoModelForMaskedLM

    path = _check_dir(path, "masked LM folder")
    tok = load_tokenizer(path)
    if tok.mask_token_id is None:
        raise EcoevalError(f"masked LM folder {path}: the tokenizer has no mask token")
    return _load_model(AutoModelForMaskedLM, path, "masked LM folder"), tok


def load_classifier(path: Path, tokenizer_fallback: Path | None = None):
    """(model, tokenizer) of a local sequence-classification folder, in eval mode."""
    from transformers import AutoModelForSequenceClassification

    path = _check_dir(path, "classifier folder")
    tok = load_tokenizer(*([path, tokenizer_fallback] if tokenizer_fallback else [path]))
    return _load_model(AutoModelForSequenceClassification, path, "classifier folder"), tok


def _load_model(auto_class, path: Path, what: str):
    """The project's one model loader (safetensors only, no remote code, one-line errors), in
    eval mode."""
    from ecoeval.training import load_pretrained

    model = load_pretrained(auto_class, path, what)
    model.eval()
    return model


def max_length(model, tokenizer) -> int:
    """The longest input the model accepts (position embeddings), capped by the tokenizer's limit."""
    n = getattr(model.config, "max_position_embeddings", None) or 512
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < n:
        n = limit
    return int(n)
