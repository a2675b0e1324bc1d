"""Type stubs of moert._moert, the compiled module (python/src/moert_module.cpp).

The dict shapes returned by the module are described as TypedDicts, named
with a leading underscore: they exist for type checkers only (import them
under typing.TYPE_CHECKING).
"""

from typing import (
    Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, TypedDict, TypeVar, Union
)

import numpy as np
import numpy.typing as npt

__version__: str

# Token ids: a sequence (or iterable) of ints, or a 1-D NumPy integer array.
_TokenIds = Union[Sequence[int], Iterable[int], npt.NDArray[np.integer]]
# A load progress callback: progress(stage, done, total).
_ProgressCallback = Callable[[str, int, int], object]

class Error(RuntimeError):
    """An error reported by the moert runtime; str(e) is its message."""

class _DeviceDict(TypedDict):
    name: str
    kind: str
    total_memory: int
    free_memory: int
    capabilities: str  # what the device supports, "key=value, ..." (empty: the plugin says nothing)

class _BackendDict(TypedDict):
    name: str
    available: bool
    reason: str
    path: str
    devices: List[_DeviceDict]

class _PluginFailureDict(TypedDict):
    path: str
    reason: str

class _ModelInfoDict(TypedDict):
    architecture: str
    model_type: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_experts: int
    experts_per_token: int
    max_context: int
    max_sequences: int
    kv_cache_tokens: int
    weight_dtype: str
    notes: list[str]

class _SummaryBaseDict(TypedDict):
    total_params: int
    active_params: int
    weight_bytes: int
    bytes_per_token: int
    kv_bytes_per_token: int
    weight_dtype: str
    text: str

class _SummaryDict(_SummaryBaseDict, total=False):
    # Present when summary(roofline=True).
    read_bandwidth: float
    roofline_s_per_token: float
    roofline_tok_s: float

class _FallbackDict(TypedDict):
    node: str
    op: str
    reason: str

class _MemoryDict(TypedDict):
    arena_bytes: Dict[str, int]
    naive_bytes: int
    state_bytes: int

class _NodeProfileDict(TypedDict):
    node: str
    op: str
    device: str
    calls: int
    seconds: Optional[float]  # None where the backend does not time nodes

class _ProfileDataDict(TypedDict):
    runs: int
    nodes: List[_NodeProfileDict]

def backends() -> List[_BackendDict]: ...
def plugin_failures() -> List[_PluginFailureDict]: ...
def load(
    path: str,
    backend: str = "reference",
    dtype: str = "f32",
    max_context: int = 0,
    strict: bool = False,
    progress: Optional[_ProgressCallback] = None,
    quantize: str = "",
    precision: str = "fast",
    kv_dtype: str = "",
    mla_cache: str = "latent",
    max_sequences: int = 16,
    kv_cache_tokens: int = 0,
    prefill_chunk: int = 512,
) -> Model: ...
def random_model(
    config_json: str,
    weights: str = "bf16",
    seed: int = 0,
    std: float = 0.02,
    name: str = "config",
    backend: str = "reference",
    dtype: str = "f32",
    max_context: int = 0,
    strict: bool = False,
    quantize: str = "",
    progress: Optional[_ProgressCallback] = None,
    precision: str = "fast",
    kv_dtype: str = "",
    mla_cache: str = "latent",
    max_sequences: int = 16,
    kv_cache_tokens: int = 0,
    prefill_chunk: int = 512,
) -> Model: ...
def read_bandwidth() -> float: ...

class _CompareRowDict(TypedDict, total=False):
    device: str
    error: str  # present (alone with device) when the device failed
    kind: str
    load_s: float
    prefill_s: List[float]
    decode_s: List[float]
    prefill_tok_s: float
    decode_tok_s: float
    decode_ms_p50: float
    decode_ms_p95: float
    fallbacks: int
    peak_bytes: int
    bytes_per_token: int
    max_abs_diff: float
    max_rel_error: float
    agrees: bool

class _ComparisonDict(TypedDict):
    prompt: List[int]
    reference_tokens: List[int]
    tolerance: float
    rows: List[_CompareRowDict]

def compare_devices(
    path: str,
    devices: List[str],
    prompt_tokens: int = 32,
    new_tokens: int = 16,
    repeat: int = 3,
    dtype: str = "f32",
    seed: int = 0,
    quantize: str = "",
    precision: str = "fast",
) -> _ComparisonDict: ...
def command_line(
    args: List[str],
    encode: Optional[Callable[[str, str], List[int]]] = None,
    decode: Optional[Callable[[str, List[int]], str]] = None,
    progress: Optional[_ProgressCallback] = None,
) -> int: ...
def supported_model_types() -> List[str]: ...

class Session:
    def append(self, token_ids: _TokenIds, all_logits: bool = True) -> npt.NDArray[np.float32]: ...
    @property
    def position(self) -> int: ...

class Engine:
    def submit(
        self,
        prompt_ids: _TokenIds,
        max_new_tokens: int = 16,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: _TokenIds = (),
    ) -> int: ...
    def step(self) -> List[Tuple[int, Optional[int], bool, str]]: ...
    def cancel(self, request: int) -> None: ...
    @property
    def idle(self) -> bool: ...
    @property
    def running(self) -> int: ...
    @property
    def waiting(self) -> int: ...

class TokenStream(Iterator[int]):
    def __iter__(self) -> TokenStream: ...
    def __next__(self) -> int: ...

_M = TypeVar("_M", bound=Model)

class Model:
    def __init__(self, model: Model) -> None: ...
    def summary(self, roofline: bool = True) -> _SummaryDict: ...
    @property
    def info(self) -> _ModelInfoDict: ...
    def forward(self, token_ids: _TokenIds) -> npt.NDArray[np.float32]: ...
    def session(self) -> Session: ...
    def generate(
        self,
        prompt_ids: _TokenIds,
        max_new_tokens: int = 16,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: _TokenIds = (),
    ) -> List[int]: ...
    def stream(
        self,
        prompt_ids: _TokenIds,
        max_new_tokens: int = 16,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: _TokenIds = (),
    ) -> TokenStream: ...
    def generate_batch(
        self,
        prompts: List[_TokenIds],
        max_new_tokens: int = 16,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: _TokenIds = (),
        step_tokens: int = 512,
    ) -> List[List[int]]: ...
    def engine(self, step_tokens: int = 512) -> Engine: ...
    @property
    def fallbacks(self) -> List[_FallbackDict]: ...
    def to(
        self: _M, backend: str, strict: bool = False, progress: Optional[_ProgressCallback] = None
    ) -> _M: ...
    @property
    def device(self) -> str: ...
    @property
    def path(self) -> str: ...
    def memory(self) -> _MemoryDict: ...
    def placement_report(self) -> str: ...
    def _profile_start(self) -> None: ...
    def _profile_stop(self) -> _ProfileDataDict: ...
