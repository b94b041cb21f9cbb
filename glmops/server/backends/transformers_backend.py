"""The transformers backend: ChatGLM3's own remote code, or any causal LM (the tiny test model)."""

from __future__ import annotations

import importlib.util
import json
import os
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from glmops.modules._fetch_worker import pointer_of
from glmops.server.backends.base import Backend, BackendError, Delta, GenerationParams
from glmops.server.config import ServerConfig
from glmops.server.prompt import SPECIAL_TOKENS, STOP_TOKENS, Turn, prompt_segments, to_history

T = TypeVar("T")
CHATGLM_TRANSFORMERS = ("4.40.x", "4.40.2")  # what ChatGLM3's remote code is written for, and the deployed pin
REMOTE_MODULES = "transformers_modules"  # where transformers puts a checkpoint's remote code when it imports it


def refuse_lfs_pointers(folder: str, what: str) -> None:
    """A folder holding git-lfs pointers instead of the files (cloned without git-lfs) is refused, naming one."""
    for base, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = os.path.join(base, name)
            if os.path.isfile(path) and pointer_of(path, os.path.getsize(path)) is not None:
                raise BackendError(f"{what} {folder}: {os.path.relpath(path, folder)} is a git-lfs pointer, not the file itself "
                                   f"(the checkpoint was cloned without git-lfs): run `git lfs pull` in {folder}, or download it again")


def checkpoint_type(folder: str) -> str:
    """config.json's model_type ('' when it cannot be read: transformers reports that itself)."""
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as handle:
            return str(json.load(handle).get("model_type", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def remote_code_place(exc: BaseException) -> str | None:
    """'file line N' of the checkpoint's remote code where `exc` arose, or None when it did not arise there."""
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if REMOTE_MODULES in frame.filename]
    if frames:
        return f"{os.path.basename(frames[-1].filename)} line {frames[-1].lineno}"
    filename = getattr(exc, "filename", None)  # a SyntaxError in the remote code
    if isinstance(filename, str) and REMOTE_MODULES in filename:
        return f"{os.path.basename(filename)} line {getattr(exc, 'lineno', '?')}"
    if isinstance(exc, ImportError) and "requires the following packages" in str(exc):  # transformers' check_imports
        return "its imports"
    return None


def with_remote_code(step: str, folder: str, chatglm: bool, call: Callable[[], T]) -> T:
    """Run one loading step; an error raised by the checkpoint's remote code becomes one clear BackendError."""
    try:
        return call()
    except BackendError:
        raise
    except Exception as exc:  # noqa: BLE001 - turned into a message for /health
        import transformers

        place = remote_code_place(exc)
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:600]
        if place is None:
            raise BackendError(f"{step} failed for {folder}: {detail}") from exc
        series, pin = CHATGLM_TRANSFORMERS
        other = not transformers.__version__.startswith(series[:-1])
        needs = f"; ChatGLM3's code needs {series}: pip install 'transformers=={pin}'" if chatglm and other else ""
        raise BackendError(f"the checkpoint's remote code in {folder} failed ({step}, {place}): {detail} "
                           f"(transformers {transformers.__version__} is installed{needs})") from exc


def pick_device(requested: str, torch: Any) -> str:
    """auto -> cuda if available, else mps, else cpu; an unavailable device is an error."""
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise BackendError("device: cuda was asked for, but torch sees no CUDA GPU (check the driver and that torch is a CUDA build)")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise BackendError("device: mps was asked for, but this torch has no MPS support (needs macOS on Apple silicon)")
    return requested


def pick_dtype(requested: str, device: str, torch: Any) -> Any:
    """auto -> float16 on GPUs, float32 on the CPU (as the guides' .float() does)."""
    if device == "cpu":
        return torch.float32
    if requested == "auto":
        return torch.float16
    return getattr(torch, requested)


class TokenStreamer:
    """transformers' streamer protocol (put/end): hands out text token by token as it is generated.

    Incremental decoding: text is released as soon as it decodes cleanly (a multi-byte character
    split over tokens waits for its last piece), not at word boundaries.
    """

    def __init__(self, tokenizer: Any):
        import queue

        self.tokenizer = tokenizer
        self.queue: "queue.Queue[str | None]" = queue.Queue()
        self.tokens: list[int] = []
        self.prefix = 0  # tokens[prefix:read] is text already handed out, kept as decoding context
        self.read = 0
        self.prompt_seen = False
        self.count = 0

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # the first call is the prompt
            self.prompt_seen = True
            return
        ids = value.reshape(-1).tolist()
        self.count += len(ids)
        self.tokens.extend(ids)
        before = self.tokenizer.decode(self.tokens[self.prefix : self.read], skip_special_tokens=True)
        after = self.tokenizer.decode(self.tokens[self.prefix :], skip_special_tokens=True)
        if after.endswith("\ufffd") or len(after) <= len(before):
            return
        self.queue.put(after[len(before) :])
        self.prefix, self.read = self.read, len(self.tokens)

    def end(self) -> None:
        rest = self.tokenizer.decode(self.tokens[self.prefix :], skip_special_tokens=True)
        done = self.tokenizer.decode(self.tokens[self.prefix : self.read], skip_special_tokens=True)
        if len(rest) > len(done):
            self.queue.put(rest[len(done) :])
        self.queue.put(None)


def penalties(prompt_tokens: int, presence: float, frequency: float, torch: Any) -> Any:
    """OpenAI's presence/frequency penalties as a logits processor, over the generated tokens only."""
    from transformers import LogitsProcessor

    class Penalties(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            generated = input_ids[:, prompt_tokens:]
            if generated.shape[1] == 0:
                return scores
            counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
            return scores - frequency * counts - presence * (counts > 0).to(scores.dtype)

    return Penalties()


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(self, config: ServerConfig):
        self.config = config
        self.model: Any = None
        self.tokenizer: Any = None
        self.device = "unloaded"
        self.dtype: Any = None
        self.lock = threading.Lock()  # one generation at a time on the model

    # -- loading ----------------------------------------------------------------------------
    def load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        import transformers
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        transformers.logging.set_verbosity_error()
        config = self.config
        folders = [(config.model_path, "model_path"), (config.tokenizer, "tokenizer_path")]
        if config.embedding_model_path:
            folders.append((config.embedding_model_path, "embedding_model_path"))
        for path, what in folders:
            if not os.path.isdir(path):
                raise BackendError(f"{what} {path} is not a directory with a model (config.json, weights)")
            refuse_lfs_pointers(path, what)
        self.device = pick_device(config.device, torch)
        self.dtype = pick_dtype(config.dtype, self.device, torch)
        remote = config.trust_remote_code
        is_chatglm = checkpoint_type(config.model_path) == "chatglm"
        model_config = with_remote_code("loading the config", config.model_path, is_chatglm, lambda: AutoConfig.from_pretrained(
            config.model_path, trust_remote_code=remote, local_files_only=True))
        is_chatglm = getattr(model_config, "model_type", "") == "chatglm"
        self.tokenizer = with_remote_code("loading the tokenizer", config.tokenizer, is_chatglm, lambda: AutoTokenizer.from_pretrained(
            config.tokenizer, trust_remote_code=remote, local_files_only=True))
        self.is_chatglm = is_chatglm
        self._require_special_tokens()
        bits = config.quantize or (getattr(model_config, "quantization_bit", 0) if is_chatglm else 0)
        if is_chatglm and bits:
            self._require_chatglm_kernels(int(bits), bool(config.quantize))
        kwargs: dict[str, Any] = {"trust_remote_code": remote, "local_files_only": True, "torch_dtype": self.dtype}
        if config.device_map:
            if self.device != "cuda":
                raise BackendError("device_map: auto spreads a model over GPUs; it needs device cuda")
            kwargs["device_map"] = config.device_map
        loader = AutoModel if is_chatglm else AutoModelForCausalLM
        bnb = bool(config.quantize) and not is_chatglm
        if bnb:
            kwargs.update(self._bitsandbytes(config.quantize))
        model = with_remote_code("loading the model", config.model_path, is_chatglm, lambda: loader.from_pretrained(config.model_path, **kwargs))
        if config.quantize and not bnb:
            model = with_remote_code(f"quantize: {config.quantize}", config.model_path, is_chatglm, lambda: self._quantize(model, config.quantize))
        if not config.device_map and not bnb:
            model = model.to(self.device)
        self.model = model.eval()
        self.stop_ids = self._stop_ids()
        with_remote_code("a first generation (load-time check)", config.model_path, is_chatglm, self._first_token)
        self.longest_token = max((len(piece) for piece in self.tokenizer.get_vocab()), default=64)
        self.load_embedder(config.embedding_model_path, self.device, config.embedding_batch_size)

    def _require_special_tokens(self) -> None:
        """The tokenizer must have every special token of ChatGLM3's prompt; checked once, at load."""
        for token in SPECIAL_TOKENS:
            self.special_id(token)

    def _require_chatglm_kernels(self, bits: int, asked: bool) -> None:
        """ChatGLM3's own quantization (the checkpoint's quantization.py) runs on CUDA only; int4 also needs cpm_kernels."""
        what = f"quantize: {bits}" if asked else f"this checkpoint is quantized (config.json quantization_bit: {bits})"
        if self.device != "cuda":
            raise BackendError(f"{what}: ChatGLM3's own quantize() (the checkpoint's quantization.py) needs CUDA: it moves every "
                               f"weight to the GPU to compress it, and int4's kernels are cpm_kernels' CUDA code; this device is "
                               f"{self.device}. Use device: cuda, or on a CPU serve the unquantized checkpoint (quantize: null) or a "
                               f"quantized file with backend llama_cpp / chatglm_cpp")
        if bits == 4 and importlib.util.find_spec("cpm_kernels") is None:
            raise BackendError(f"{what}: ChatGLM3's int4 compression and matrix kernels come from the cpm_kernels package, which "
                               f"is not installed: pip install cpm_kernels")

    def _first_token(self) -> None:
        """Encode a conversation with the real code path and generate one token: a checkpoint whose tokenizer or
        model code cannot run here fails now (/health says why), not on every request. Also fixes the
        tokenizer's settings before threads share it."""
        turns = [Turn("system", "warm up", tools=[{"name": "f", "parameters": {}}]), Turn("user", "warm up"),
                 Turn("assistant", "x", metadata="f"), Turn("observation", "{}")]
        ids = self.encode(turns).to(self.model.device)
        with self.torch.inference_mode():
            self.model.generate(input_ids=ids, attention_mask=self.torch.ones_like(ids), max_new_tokens=1, do_sample=False,
                                eos_token_id=self.stop_ids, pad_token_id=self.stop_ids[0], temperature=None, top_p=None, top_k=None)

    @staticmethod
    def _quantize(model: Any, bits: int) -> Any:
        """ChatGLM3's own int4/int8 kernels (its remote code has .quantize(bits))."""
        if not hasattr(model, "quantize"):
            raise BackendError(f"quantize: {bits}: this checkpoint has no .quantize(); install bitsandbytes or use a pre-quantized model")
        return model.quantize(bits)

    def _bitsandbytes(self, bits: int) -> dict[str, Any]:
        """Quantization at load time for models without their own .quantize() (needs CUDA and bitsandbytes)."""
        import importlib.util

        if importlib.util.find_spec("bitsandbytes") is None:
            raise BackendError(f"quantize: {bits} for this model needs bitsandbytes (pip install bitsandbytes) on a CUDA host")
        if self.device != "cuda":
            raise BackendError(f"quantize: {bits} with bitsandbytes needs device cuda")
        from transformers import BitsAndBytesConfig

        setting = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=self.dtype) if bits == 4 else BitsAndBytesConfig(load_in_8bit=True)
        return {"quantization_config": setting, "device_map": self.config.device_map or {"": 0}}

    def _stop_ids(self) -> list[int]:
        ids = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        for token in STOP_TOKENS:
            if hasattr(self.tokenizer, "get_command"):  # ChatGLM3's tokenizer
                try:
                    ids.add(self.tokenizer.get_command(token))
                    continue
                except (KeyError, ValueError):
                    pass
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != self.tokenizer.unk_token_id:
                ids.add(token_id)
        return sorted(ids)

    # -- info -------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "device": self.device,
            "dtype": str(self.dtype).replace("torch.", "") if self.dtype is not None else None,
            "quantize": self.config.quantize,
            "device_map": self.config.device_map,
        }
        if self.device == "cuda" and getattr(self, "torch", None) is not None:
            gpus = []
            for index in range(self.torch.cuda.device_count()):
                free, total = self.torch.cuda.mem_get_info(index)
                gpus.append({"index": index, "name": self.torch.cuda.get_device_name(index),
                             "memory_used_mb": (total - free) // 2**20, "memory_total_mb": total // 2**20})
            data["gpus"] = gpus
        return data

    def max_token_chars(self) -> int:
        return getattr(self, "longest_token", 64)

    # -- chat -------------------------------------------------------------------------------
    def text_ids(self, text: str) -> list[int]:
        """Plain text to ids: special-token spellings in it stay text."""
        inner = getattr(self.tokenizer, "tokenizer", None)
        if self.is_chatglm and hasattr(inner, "encode") and hasattr(inner, "sp_model"):  # ChatGLM3's SPTokenizer
            return list(inner.encode(text))
        return list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])

    def special_id(self, token: str) -> int:
        """The id of one of ChatGLM3's special tokens; BackendError when the tokenizer has none."""
        token_id: Any = None
        if hasattr(self.tokenizer, "get_command"):  # ChatGLM's tokenizers (an assert when the token is missing)
            try:
                token_id = self.tokenizer.get_command(token)
            except (AssertionError, KeyError, ValueError):
                token_id = None
        else:
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if token_id == self.tokenizer.unk_token_id:
                token_id = None
        if not isinstance(token_id, int):
            raise BackendError(f"the tokenizer in {self.config.tokenizer} has no special token {token}, which ChatGLM3's prompt "
                               f"needs ({' '.join(SPECIAL_TOKENS)}): it is not ChatGLM3's tokenizer; point tokenizer_path "
                               f"(or model_path) at a ChatGLM3 checkpoint's tokenizer files")
        return token_id

    def encode(self, turns: list[Turn], prefix: str = "") -> Any:
        """The prompt's ids: the real ChatGLM3 tokenizer's build_chat_input, else glmops's template."""
        if self.is_chatglm and hasattr(self.tokenizer, "build_chat_input"):
            history, query, role = to_history(turns)
            ids = self.tokenizer.build_chat_input(query, history=history, role=role)["input_ids"]
            if prefix:
                ids = self.torch.cat([ids, self.torch.tensor([self.text_ids(prefix)], dtype=ids.dtype)], dim=1)
            return ids
        ids: list[int] = []
        for text, special in prompt_segments(turns, prefix):
            if special:
                ids.append(self.special_id(text))
            elif text:
                ids += self.text_ids(text)
        return self.torch.tensor([ids], dtype=self.torch.long)

    def count_tokens(self, turns: list[Turn]) -> int:
        return int(self.encode(turns).shape[1])

    def generate(self, turns: list[Turn], params: GenerationParams, cancel: threading.Event) -> Iterator[Delta]:
        import queue

        from transformers import StoppingCriteria, StoppingCriteriaList

        torch = self.torch
        input_ids = self.encode(turns, params.prefix)
        prompt_tokens = int(input_ids.shape[1])
        if prompt_tokens >= self.config.max_context:
            raise BackendError(f"the conversation has {prompt_tokens} tokens; the limit (max_context) is {self.config.max_context}")
        max_new = min(params.max_tokens, self.config.max_context - prompt_tokens)
        generated = [0]

        class Cancelled(StoppingCriteria):
            def __call__(self, ids: Any, scores: Any, **kwargs: Any) -> Any:
                generated[0] = int(ids.shape[1]) - prompt_tokens
                return cancel.is_set()

        streamer = TokenStreamer(self.tokenizer)
        sample = params.temperature > 1e-5
        kwargs: dict[str, Any] = {
            "input_ids": input_ids.to(self.model.device),
            "attention_mask": torch.ones_like(input_ids).to(self.model.device),
            "max_new_tokens": max_new,
            "min_new_tokens": min(params.min_tokens, max_new) or None,
            "do_sample": sample,
            "repetition_penalty": params.repetition_penalty,
            "eos_token_id": self.stop_ids,
            "pad_token_id": self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[0],
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([Cancelled()]),
        }
        if params.presence_penalty or params.frequency_penalty:
            from transformers import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList([penalties(prompt_tokens, params.presence_penalty, params.frequency_penalty, torch)])
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        errors: list[BaseException] = []
        output: list[Any] = []

        def work() -> None:
            try:
                with torch.inference_mode():
                    if params.seed is not None:
                        torch.manual_seed(params.seed)
                    output.append(self.model.generate(**kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                errors.append(exc)
                streamer.end()

        with self.lock:
            thread = threading.Thread(target=work, daemon=True)
            thread.start()
            text = ""
            stopped_by_string = False
            while True:
                try:
                    piece = streamer.queue.get(timeout=0.5)
                except queue.Empty:
                    if not thread.is_alive() and streamer.queue.empty():
                        break
                    continue
                if piece is None:
                    break
                text += piece
                if params.stop:
                    cut = min((text.find(s) for s in params.stop if s in text), default=-1)
                    if cut >= 0:
                        emitted = len(text) - len(piece)
                        if cut > emitted:
                            yield Delta(text[emitted:cut])
                        stopped_by_string = True
                        cancel.set()
                        break
                yield Delta(piece)
            thread.join()
        if errors:
            raise BackendError(f"generation failed: {errors[0]}")
        completion = int(output[0].shape[1]) - prompt_tokens if output else generated[0]
        last = int(output[0][0, -1]) if output and completion > 0 else None
        if completion > 0 and last in self.stop_ids:
            completion -= 1  # the stop token itself is not part of the answer
        finish = "length" if completion >= max_new and not stopped_by_string else "stop"
        yield Delta("", done=True, prompt_tokens=prompt_tokens, completion_tokens=completion, finish_reason=finish)
