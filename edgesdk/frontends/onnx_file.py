"""A bare ONNX file as a model source — text (+ a tokenizer folder), image or raw-tensor; ONNX Runtime FP32 is its
reference.

Real ONNX files are messy: `dim_param`s that say nothing, outputs that echo the inputs (sentence-transformers
exports return input_ids and attention_mask beside the embeddings), several candidate outputs. So the file is run
once on a probe input and its outputs are judged by their real shapes and dtypes: integer outputs (echoes of the
token inputs) are skipped,
then `--output NAME` wins, else the rule below picks one, and the other outputs are cut from the graph.
- text: a [B, H] output named like a pooled embedding (sentence_embedding, pooler_output, embeddings) → embedding,
  already pooled; `logits` → classifier; a [B, S, H] output → token embeddings, pooled as the tokenizer folder's
  sentence-transformers config says (mean by default); another [B, C] output → classifier.
- image / tensor: the first float output ([B, C] → classifier for images unless --task image-embedding).
Every refusal names the output it looked at and the flag that fixes it.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import numpy as np

from ..errors import ModelSourceError, require
from ..families.text import EXAMPLE_IDS, TOKEN_INPUTS, read_sentence_transformers_config
from .source import Feeds, SourceModel, SourceOptions, check_tokenizer_dir

POOLED = re.compile(r"sentence_embedding|pooler_output|pooled|embedding", re.I)
TEXT_TASKS = ("embedding", "classification")
POOLINGS = ("mean", "cls", "none")
ONNX_DTYPES = {1: "float32", 10: "float16", 7: "int64", 6: "int32", 2: "uint8", 3: "int8", 9: "bool"}


def load_onnx_file(path: Path, work_dir: Path, tokenizer: str | Path | None,
                   options: SourceOptions | None = None) -> SourceModel:
    onnx = require("onnx", "export")
    require("onnxruntime", "onnxruntime")
    options = options or SourceOptions()
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError / ValidationError / google.protobuf errors
        raise ModelSourceError(f"'{path}' is not a valid ONNX model ({type(exc).__name__}: {exc}). "
                               "Re-export it or check that the file was copied completely.") from exc
    initializers = {x.name for x in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    names = [i.name for i in graph_inputs]
    if not names:
        raise ModelSourceError(f"'{path}' has no inputs; edgesdk exports models that take at least one tensor.")
    if "input_ids" in names or tokenizer is not None:
        return _text(path, model, names, work_dir, tokenizer, options)
    return _tensor_or_image(path, model, graph_inputs, work_dir, options)


def _text(path: Path, model, names: list[str], work_dir: Path, tokenizer, options: SourceOptions) -> SourceModel:
    from ..families import text

    if tokenizer is None:
        if (path.parent / "tokenizer.json").is_file():
            tokenizer = path.parent
        else:
            raise ModelSourceError(f"'{path}' is a bare ONNX text model: pass the folder with its tokenizer.json as "
                                   "--tokenizer DIR (Python: tokenizer=...).")
    tok_dir = check_tokenizer_dir(Path(tokenizer))
    unknown = [n for n in names if n not in TOKEN_INPUTS]
    if unknown or "input_ids" not in names:
        raise ModelSourceError(f"'{path}' has inputs {names}; edgesdk text models take {list(TOKEN_INPUTS)} "
                               "(input_ids required). Drop --tokenizer to export it as an image or tensor model.")
    if options.task is not None and options.task not in TEXT_TASKS:
        raise ModelSourceError(f"--task '{options.task}' is not a text task; choose {', '.join(TEXT_TASKS)}.")
    ids = np.zeros((2, 12), dtype=np.int64)
    ids[:, :4] = EXAMPLE_IDS
    ids[1, 4:9] = EXAMPLE_IDS[1]
    mask = (ids != 0).astype(np.int64)
    probe = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    feeds = {n: probe[n] for n in names}
    outputs = _probe(path, model, feeds)
    name, value = _pick_text(path, outputs, options)
    pooling, normalize, st_max = read_sentence_transformers_config(tok_dir)
    if value.ndim == 2:
        task = options.task or ("embedding" if POOLED.search(name) else "classification")
        pooling = "softmax" if task == "classification" else "none"
    else:
        task = "embedding"
        if options.task == "classification":
            raise ModelSourceError(f"'{path}': output '{name}' has shape {list(value.shape)} (token states); a "
                                   "classifier gives [batch, classes]. Pass --output NAME of the logits.")
    if options.pooling:
        if options.pooling not in POOLINGS:
            raise ModelSourceError(f"--pooling '{options.pooling}' is not one of {', '.join(POOLINGS)}.")
        if options.pooling != "none" and value.ndim != 3:
            raise ModelSourceError(f"--pooling {options.pooling} pools token states [B, S, H]; output '{name}' has "
                                   f"shape {list(value.shape)}, already one vector per text. Drop --pooling.")
        pooling = options.pooling
    local = _single_output(model, name, work_dir)
    session = _session(local)

    def reference(feeds: Feeds) -> np.ndarray:
        return session.run([name], {n: np.asarray(feeds[n], dtype=np.int64) for n in names})[0]

    return SourceModel(name=path.stem, source=str(path), onnx_path=local, tokenizer_dir=tok_dir, task=task,
                       pooling=pooling, normalize=normalize and task == "embedding",
                       max_length=int(st_max or 512), input_names=names, output_name=name, reference=reference,
                       family=text)


def _tensor_or_image(path: Path, model, graph_inputs, work_dir: Path, options: SourceOptions) -> SourceModel:
    from ..families import image

    given = dict(options.input_shapes)
    specs = []
    for i, value in enumerate(graph_inputs):
        tensor = value.type.tensor_type
        dtype = ONNX_DTYPES.get(tensor.elem_type)
        if dtype is None:
            raise ModelSourceError(f"'{path}': input '{value.name}' has ONNX element type {tensor.elem_type}, which "
                                   f"edgesdk does not feed ({', '.join(ONNX_DTYPES.values())}).")
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim]
        shape = given.get(value.name) or (given.get(None) if len(graph_inputs) == 1 else None)
        if shape is not None:
            if len(shape) != len(dims) or any(d is not None and d != s for d, s in zip(dims[1:], shape[1:])):
                raise ModelSourceError(f"--input-shape {list(shape)} does not fit input '{value.name}' of '{path}', "
                                       f"whose shape is {[d if d else '?' for d in dims]}.")
        elif any(d is None for d in dims[1:]):
            raise ModelSourceError(f"'{path}': input '{value.name}' has shape {[d if d else '?' for d in dims]} with "
                                   f"unknown dimensions; pass --input-shape {value.name}=1,... with every dimension.")
        else:
            shape = (1, *dims[1:])
        specs.append({"name": value.name, "dtype": dtype, "shape": [1, *shape[1:]]})
    rng = np.random.default_rng(0)
    probe = {s["name"]: (rng.standard_normal((2, *s["shape"][1:])).astype(s["dtype"])
                         if s["dtype"].startswith("float") else np.zeros((2, *s["shape"][1:]), s["dtype"]))
             for s in specs}
    outputs = _probe(path, model, probe)
    candidates = {k: v for k, v in outputs.items() if np.issubdtype(v.dtype, np.floating)}
    name = options.output or next(iter(candidates), None)
    if name is None or name not in outputs:
        raise ModelSourceError(f"'{path}': {'--output ' + repr(options.output) + ' is not' if options.output else 'no'}"
                               f" a float output; its outputs are {_describe(outputs)}. Pass --output NAME.")
    value = outputs[name]
    looks_like_image = len(specs) == 1 and specs[0]["dtype"].startswith("float") \
        and image.layout_of(tuple(specs[0]["shape"])) is not None
    task_flag = options.task
    if task_flag not in (None, "image-classification", "image-embedding", "tensor"):
        raise ModelSourceError(f"--task '{task_flag}' is not one for this model; choose image-classification, "
                               "image-embedding or tensor.")
    if task_flag == "tensor" or (task_flag is None and not looks_like_image):
        family, task, pooling, info = "tensor", "tensor", "none", None
    else:
        classify = task_flag != "image-embedding"
        if classify and value.ndim != 2:
            raise ModelSourceError(f"'{path}': output '{name}' has shape {list(value.shape)}, not [batch, classes]; "
                                   "pass --task image-embedding, --task tensor, or --output NAME of the logits.")
        info = image.preprocessing(specs[0]["name"], tuple(specs[0]["shape"]), options,
                                   image.hf_defaults(path.parent))
        family, task, pooling = "image", "classification" if classify else "embedding", \
            "softmax" if classify else "none"
    local = _single_output(model, name, work_dir)
    session = _session(local)
    names = [s["name"] for s in specs]

    def reference(feeds: Feeds) -> np.ndarray:
        return session.run([name], {n: np.asarray(feeds[n]) for n in names})[0]

    labels = []
    if options.labels:
        labels = [x.strip() for x in Path(options.labels).read_text(encoding="utf-8").splitlines() if x.strip()]
        if value.ndim == 2 and len(labels) != value.shape[1]:
            raise ModelSourceError(f"--labels '{options.labels}' has {len(labels)} labels; output '{name}' has "
                                   f"{value.shape[1]} classes.")
    from .. import families

    return SourceModel(name=path.stem, source=str(path), onnx_path=local, tokenizer_dir=work_dir, task=task,
                       pooling=pooling, normalize=False, max_length=0, input_names=names, output_name=name,
                       labels=labels, reference=reference,
                       family=importlib.import_module(f"{families.__name__}.{family}"), inputs=specs,
                       preprocessing=info)


def _probe(path: Path, model, feeds: Feeds) -> dict[str, np.ndarray]:
    """Every output of the model on the probe feeds, by name (real shapes and dtypes, not dim_params)."""
    try:
        session = _session(path)
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))
    except ModelSourceError:
        raise
    except Exception as exc:
        shapes = {k: list(v.shape) for k, v in feeds.items()}
        raise ModelSourceError(f"'{path}' does not run in ONNX Runtime on probe inputs {shapes} "
                               f"({type(exc).__name__}: {str(exc)[:300]}); pass --input-shape to fix the probe, or "
                               "check the file.") from None


def _pick_text(path: Path, outputs: dict[str, np.ndarray], options: SourceOptions) -> tuple[str, np.ndarray]:
    """The output to deploy: --output, else by rule among the float outputs that do not echo an input."""
    echoes = {k for k, v in outputs.items() if not np.issubdtype(v.dtype, np.floating)}
    floats = {k: v for k, v in outputs.items() if k not in echoes}
    if options.output:
        if options.output not in outputs:
            raise ModelSourceError(f"--output '{options.output}' is not an output of '{path}'; its outputs are "
                                   f"{_describe(outputs)}.")
        if options.output in echoes:
            raise ModelSourceError(f"--output '{options.output}' of '{path}' is not a float tensor (it echoes an "
                                   f"input); pick one of {_describe(floats) or 'none'}.")
        return options.output, outputs[options.output]
    pooled = [k for k, v in floats.items() if v.ndim == 2 and POOLED.search(k)]
    logits = [k for k, v in floats.items() if v.ndim == 2 and re.search(r"logits|scores", k, re.I)]
    tokens = [k for k, v in floats.items() if v.ndim == 3]
    others = [k for k, v in floats.items() if v.ndim == 2]
    if options.task == "classification":
        chosen = logits or others
    elif options.task == "embedding":
        chosen = pooled or tokens or others
    else:
        chosen = pooled or logits or tokens or others
    if not chosen:
        raise ModelSourceError(f"'{path}': none of its outputs is an embedding or logits ({_describe(outputs)}); "
                               "pass --output NAME.")
    return chosen[0], floats[chosen[0]]


def _describe(outputs: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k} {list(v.shape)} {v.dtype}" for k, v in outputs.items())


def _single_output(model, name: str, work_dir: Path) -> Path:
    """The model with only the chosen output (the others and what only they used are pruned by the graph passes)."""
    import onnx

    local = work_dir / "source_fp32.onnx"
    if len(model.graph.output) == 1 and model.graph.output[0].name == name:
        onnx.save(model, str(local))
        return local
    kept = [o for o in model.graph.output if o.name == name]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    onnx.save(model, str(local))
    return local


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
