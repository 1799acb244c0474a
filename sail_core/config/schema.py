"""The configuration's schema: pydantic models whose defaults equal ``params.yaml``'s ``base`` section.

Each model rejects unknown keys; the validators refuse, at load, settings that could only fail later.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class DataConfig(_Strict):
    """How the demo catalogue and its pair datasets are built."""

    source: Literal["demo", "files"] = Field("demo", description="demo = MovieLens-100k from recbole; files = your own tables")
    items_file: str | None = Field(None, description="items CSV/parquet when source=files")
    interactions_file: str | None = Field(None, description="interactions CSV/parquet when source=files")
    pairs_dir: str | None = Field(None, description="optional folder of pair tables when source=files")
    seed: int = 0
    max_items: int | None = Field(None, ge=10, description="keep the most-rated items only; null = the whole catalogue")
    max_users: int | None = Field(None, ge=5)
    holdout_fraction: float = Field(0.3, gt=0.0, lt=0.9, description=(
        "share of items in the test split (the reported figures); never in a training pair or negative"))
    val_fraction: float = Field(0.1, ge=0.0, lt=0.9, description=(
        "share of items in the validation split (balancing, mining, early checks; never reported)"))
    train_time_fraction: float = Field(0.8, gt=0.0, lt=1.0, description=(
        "per-user time cutoff for data derived from interactions: the share of each user's events (in time "
        "order) before the cutoff; training uses only those, test targets come after it"))
    positive_rating: float = Field(4.0, ge=0.0, le=5.0, description="ratings at or above this are positive")
    copair_window_days: float = Field(7.0, gt=0.0, description="co-engagement window for copair_i2i")
    max_pairs_per_dataset: int = Field(20000, ge=10)
    media: bool = Field(True, description="demo: render cover + keyframes and speak an ASR track per item")
    render_keyframes: int = Field(2, ge=0, le=32, description=(
        "demo: keyframes rendered per item (how many the model samples is model.inputs.keyframes)"))
    image_size: int = Field(224, ge=32, le=1024, description="demo: rendered cover/keyframe size in pixels")
    media_workers: int | None = Field(None, ge=1, description=(
        "processes that render the demo's media and threads that check media files at validation; "
        "null = the CPUs this process may use"))

    @model_validator(mode="after")
    def _files_need_paths(self) -> "DataConfig":
        if self.source == "files" and not (self.items_file and self.interactions_file):
            raise ValueError("data.source=files needs data.items_file and data.interactions_file")
        if self.holdout_fraction + self.val_fraction >= 0.9:
            raise ValueError(f"data.holdout_fraction ({self.holdout_fraction}) + data.val_fraction ({self.val_fraction}) "
                             "must stay below 0.9, or too few items are left to train on")
        return self


class ContractsConfig(_Strict):
    """Tolerances for the Great Expectations data contracts."""

    # Share of a table's rows that may be quarantined before the run stops.
    max_quarantine_fraction: float = Field(0.0, ge=0.0, le=1.0)


MODALITIES = ("text", "image", "frames", "audio", "omni")


class DatasetConfig(_Strict):
    """One pair dataset: its task, instructions, sampling weight, loss and modality patterns.

    ``patterns`` lists the valid ``query->target`` modality pairs, e.g.
    ``text->image``, ``frames->text``, ``omni->omni`` (modalities: text,
    image = the cover, frames = the keyframes, audio, omni = every field the
    item has). Every valid pattern of a batch is built and its loss computed
    in one forward pass; a modality that no pattern names contributes no loss.
    A free-text side (q2i queries, cls labels) is always ``text``.
    """

    task: Literal["i2i", "q2i", "cls"]
    weight: float = Field(1.0, gt=0.0)
    temperature_init: float = Field(0.05, gt=0.0, lt=1.0)
    query_instruction: str = ""
    target_instruction: str = ""
    loss: Literal["infonce"] = "infonce"
    patterns: list[str] = Field(default_factory=lambda: ["text->text"])
    target_gradient: bool = Field(True, description=(
        "False: this dataset's targets (and hard negatives) are detached in its loss, so its queries learn to "
        "meet the current target space without moving it (LiT-style locked targets)"))
    cosent_weight: float = Field(0.0, ge=0.0, description=(
        "CoSENT on the pairs' graded `score` (the first pattern's embeddings, every Matryoshka dim); 0 = off"))
    micl_weight: float = Field(0.0, ge=0.0, description=(
        "mICL: the query item's image-only and text-only embeddings, each with InfoNCE against the first "
        "pattern's target; needs item queries; 0 = off"))
    late_fusion_weight: float = Field(0.0, ge=0.0, description=(
        "late-fusion gate m_hat = g*v + (1-g)*m of the query item's image-only (v) and omni (m) embeddings, "
        "with InfoNCE against the first pattern's target; a training loss only (m is what is served); 0 = off"))

    @model_validator(mode="after")
    def _patterns_known(self) -> "DatasetConfig":
        for p in self.patterns:
            q, _, t = p.partition("->")
            if q not in MODALITIES or t not in MODALITIES:
                raise ValueError(
                    f"pattern {p!r} must be QUERY->TARGET with each side one of {', '.join(MODALITIES)}"
                )
        if len(set(self.patterns)) != len(self.patterns) or not self.patterns:
            raise ValueError(f"patterns must be non-empty and distinct, got {self.patterns}")
        return self


class Qwen2ShapeConfig(_Strict):
    """Shape of the ``qwen2`` fusion backbone (random weights; defaults are Qwen2-1.5B's)."""

    hidden_size: int = Field(1536, ge=8)
    layers: int = Field(28, ge=1)
    heads: int = Field(12, ge=1)
    kv_heads: int = Field(2, ge=1)
    intermediate_size: int = Field(8960, ge=8)
    rope_theta: float = Field(1_000_000.0, gt=0)
    rms_norm_eps: float = Field(1e-6, gt=0)

    @model_validator(mode="after")
    def _heads_divide(self) -> "Qwen2ShapeConfig":
        if self.hidden_size % self.heads or self.heads % self.kv_heads:
            raise ValueError(
                f"model.qwen2: hidden_size ({self.hidden_size}) must be divisible by heads ({self.heads}) "
                f"and heads by kv_heads ({self.kv_heads})"
            )
        return self


class VisionConfig(_Strict):
    """Vision tower: frozen EfficientNet-Lite0 (demo) or a SigLIP-shaped ViT built from config (paper)."""

    encoder: Literal["efficientnet_lite0", "siglip"] = "efficientnet_lite0"
    image_size: int = Field(224, ge=14, description="square input resolution in pixels")
    frozen: bool = Field(True, description="no gradients into the tower (features can then be cached)")
    patch_size: int = Field(14, ge=1, description="siglip only")
    hidden_size: int = Field(1024, ge=8, description="siglip only")
    layers: int = Field(24, ge=1, description="siglip only")
    heads: int = Field(16, ge=1, description="siglip only")
    intermediate_size: int = Field(4096, ge=8, description="siglip only")


class PerceiverConfig(_Strict):
    """Perceiver resampler: ``latents`` learned queries per visual group (cover; keyframes)."""

    latents: int = Field(16, ge=1)
    dim: int = Field(384, ge=8, description="working width of the resampler")
    depth: int = Field(1, ge=1)
    heads: int = Field(8, ge=1)
    ff_mult: int = Field(4, ge=1)
    max_frames: int = Field(16, ge=1, description="size of the learned per-frame position table")


class ClapShapeConfig(_Strict):
    """Shape of transformers' CLAP audio tower (HTSAT-Swin) for the ``clap`` audio encoder."""

    hidden_size: int = Field(768, ge=8)
    patch_embeds_hidden_size: int = Field(96, ge=8)
    depths: list[int] = Field(default_factory=lambda: [2, 2, 6, 2])
    heads: list[int] = Field(default_factory=lambda: [4, 8, 16, 32])
    window_size: int = Field(8, ge=1)
    num_mel_bins: int = Field(64, ge=8)
    spec_size: int = Field(256, ge=16)
    projection_dim: int = Field(512, ge=8)


class AudioConfig(_Strict):
    """Audio: one token per item, from ``chunk_seconds`` chunks mean-pooled, through an adapter MLP."""

    encoder: Literal["speech_embedding", "clap"] = "speech_embedding"
    chunk_seconds: float = Field(2.0, gt=0, description="clips are cut (or repeat-padded) to chunks of this length")
    adapter_hidden: int = Field(512, ge=8)
    frozen: bool = Field(True, description="clap only: no gradients into the tower")
    clap: ClapShapeConfig = ClapShapeConfig()


class InputsConfig(_Strict):
    """How items become model inputs."""

    keyframes: int = Field(2, ge=0, le=64, description=(
        "keyframes the model samples per item, uniformly over the video (data.render_keyframes: how many the demo renders)"))
    field_dropout: float = Field(0.15, ge=0.0, lt=1.0, description="training: chance to drop each present modality/text field (never all)")
    max_instruction_length: int = Field(48, ge=4, le=256)


class ModelConfig(_Strict):
    """The encoder. ``demo`` uses the packaged all-MiniLM-L6-v2 backbone; ``paper`` a Qwen2-shaped one."""

    backbone: Literal["minilm", "qwen2"] = "minilm"
    max_length: int = Field(64, ge=8, le=512)
    matryoshka_dims: list[int] = Field(default_factory=lambda: [384, 128, 64])
    qwen2: Qwen2ShapeConfig = Qwen2ShapeConfig()
    vision: VisionConfig = VisionConfig()
    perceiver: PerceiverConfig = PerceiverConfig()
    audio: AudioConfig = AudioConfig()
    inputs: InputsConfig = InputsConfig()
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    gradient_checkpointing: bool = False
    dropout: float | None = Field(None, ge=0.0, lt=1.0, description=(
        "the backbone's hidden and attention dropout in training; None keeps the backbone's own (MiniLM: 0.1)"))

    @model_validator(mode="after")
    def _dims_descending(self) -> "ModelConfig":
        dims = self.matryoshka_dims
        if not dims or sorted(dims, reverse=True) != dims or len(set(dims)) != len(dims):
            raise ValueError(f"model.matryoshka_dims must be distinct and descending, got {dims}")
        width = embedding_width(self)
        if dims[0] > width:
            raise ValueError(f"model.matryoshka_dims {dims} exceed the {self.backbone} backbone's width {width}; "
                             f"allowed: dims of at most {width}")
        return self


MINILM_WIDTH = 384  # hidden size of the packaged all-MiniLM-L6-v2 (the model checks it against the loaded backbone)


def embedding_width(model: ModelConfig) -> int:
    """The full embedding size: the backbone's hidden size."""
    return MINILM_WIDTH if model.backbone == "minilm" else model.qwen2.hidden_size


class StageConfig(_Strict):
    """One training stage; stages are data, run by one training loop."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", description=(
        "letters, digits and _: the name is also an Airflow task id (train.NAME), a DVC stage (train@NAME) "
        "and a folder (models/NAME)"))
    datasets: list[str]
    steps: int = Field(100, ge=1)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(5e-5, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    warmup_steps: int = Field(10, ge=0)
    grad_clip: float = Field(1.0, gt=0.0)
    checkpoint_every: int = Field(50, ge=1)
    hard_negatives: int = Field(0, ge=0, description=(
        "mined hard negatives per query (stage III): a `mine` step before the stage mines them with the stage's "
        "starting model for the datasets in hard_negative_datasets"))
    hard_negative_datasets: list[str] = Field(default_factory=list, description=(
        "the stage's datasets that get hard negatives (item targets only: not cls); shown on the first pattern"))
    balance: bool = Field(False, description=(
        "sampling weights from adaptive balancing (train.balance): computed with this stage's starting model "
        "the first time a stage asks, then carried to the later stages"))
    temperature_lr: float | None = Field(None, gt=0.0, description="lr of the learnable temperatures; None = the stage's lr")
    media_lr: float | None = Field(None, gt=0.0, description="lr of the freshly initialised media modules (Perceiver, audio adapter, media-type embeddings); None = the stage's lr")


class BalanceConfig(_Strict):
    """Adaptive multi-source balancing (sail_core.train.balancing): k-means of each dataset's query embeddings,
    Sinkhorn match of the centroids against each task's validation split, softmax into sampling weights."""

    enabled: bool = Field(True, description="false: stages that ask for balancing keep their configured weights")
    rows: int = Field(256, ge=8, description="rows embedded per dataset and per validation set")
    k: int = Field(16, ge=1, description="k-means clusters per set")
    reg: float = Field(0.05, gt=0.0, description="Sinkhorn entropic regularisation")
    temperature: float = Field(0.05, gt=0.0, description="softmax temperature of -cost")
    mix: float = Field(0.3, ge=0.0, le=1.0, description=(
        "sampling weight = mix * balanced + (1 - mix) * configured (both normalised): keeps every dataset alive"))


CRE_TASKS = ("seq2item", "id2item")   # reserved stage dataset names: the CRE tasks (configured under `cre`)
SequenceBuilder = Literal["content_single", "content_multi", "collab_single", "collab_multi"]


class TeacherConfig(_Strict):
    """The collaborative teacher (sail_core.rec.teacher): item ID embeddings from the interactions, with
    `implicit`, trained on train items' positive events before each user's time cutoff only."""

    algorithm: Literal["als", "bpr"] = Field("als", description="implicit's AlternatingLeastSquares or BPR")
    factors: int = Field(64, ge=2, description="size of the ID embeddings")
    iterations: int = Field(20, ge=1)
    regularization: float = Field(0.05, ge=0.0)
    alpha: float = Field(10.0, gt=0.0, description="als: confidence of a positive interaction (1 + alpha)")
    learning_rate: float = Field(0.01, gt=0.0, description="bpr only")
    ks: list[int] = Field(default_factory=lambda: [10, 50], description=(
        "k of the teacher's own Recall@k and NDCG@k on the events after the cutoff"))


class Seq2ItemConfig(_Strict):
    """seq2item distillation (sail_core.rec.sequences, sail_core.train.cre): a user's earlier positive items
    pooled by a sequence encoder, InfoNCE against the next positive item, at every Matryoshka dim."""

    weight: float = Field(2.0, gt=0.0, description="sampling weight of the seq2item task in a stage")
    temperature_init: float = Field(0.05, gt=0.0, lt=1.0)
    max_length: int = Field(10, ge=1, description="earlier items in a sequence")
    candidates: int = Field(50, ge=1, description="the most recent earlier items a builder selects from")
    targets_per_user: int = Field(20, ge=1, description="training targets per user: the most recent ones")
    builders: list[SequenceBuilder] = Field(
        default_factory=lambda: ["content_single", "content_multi", "collab_single", "collab_multi"],
        description="sequence builders; each training target gets one sequence per builder")
    peaks: int = Field(3, ge=2, description="multi-peak builders: interest clusters of the history")
    encoder: Literal["mean", "transformer"] = Field("mean", description=(
        "mean pooling, or a small transformer with a summary token (saved with the model, cre.pt)"))
    encoder_layers: int = Field(1, ge=1)
    encoder_heads: int = Field(4, ge=1)
    sequence_gradient: bool = Field(False, description=(
        "true: the sequence items are embedded by the model in the step (gradient through them; ~10x the cost); "
        "false: they come from the starting model's catalogue embeddings, and the gradient reaches the target "
        "items and the sequence encoder"))


class Id2ItemConfig(_Strict):
    """ID2item distillation: a learned projection of the teacher's ID embedding, aligned with the item's omni
    embedding by InfoNCE (sail_core.train.cre)."""

    weight: float = Field(1.0, gt=0.0, description="sampling weight of the id2item task in a stage")
    temperature_init: float = Field(0.05, gt=0.0, lt=1.0)
    projection: Literal["linear", "mlp"] = Field("linear", description="teacher vector -> embedding space")


class CreConfig(_Strict):
    """Collaboration-aware recommendation enhancement: the teacher and the two distillation tasks. A stage
    trains them by listing `seq2item` / `id2item` among its datasets (next to an i2i dataset, the auxiliary
    retrieval task)."""

    teacher: TeacherConfig = TeacherConfig()
    seq2item: Seq2ItemConfig = Seq2ItemConfig()
    id2item: Id2ItemConfig = Id2ItemConfig()
    instruction: str = Field("Represent this movie for retrieval.", description=(
        "instruction of the items the CRE tasks embed: the catalogue's (the q2i target instruction), so that "
        "what they train is what the index and the recommendation metrics read"))


class TrainConfig(_Strict):
    """The training stages, run in order, and the CPU threads of training and evaluation."""

    seed: int = 0
    stages: list[StageConfig]
    balance: BalanceConfig = BalanceConfig()
    threads: int | None = Field(None, ge=1, description="torch CPU threads; None = torch default")
    feature_threads: int | None = Field(None, ge=1, description=(
        "onnxruntime threads of the frozen towers that fill the media feature cache (training and evaluation); "
        "None = torch's thread count"))
    device: str = Field("cpu", pattern=r"^(cpu|cuda|cuda:\d+)$", description=(
        "where training runs: cpu, cuda (under torchrun: cuda:LOCAL_RANK) or cuda:N"))
    precision: Literal["fp32", "bf16-autocast", "bf16"] = Field("fp32", description=(
        "fp32; bf16-autocast (fp32 weights, bf16 matmuls); bf16 (pure bf16 weights, gradients and AdamW states; "
        "the losses stay in fp32)"))
    grad_cache_chunk: int | None = Field(None, ge=1, description=(
        "GradCache: embed a step's samples in chunks of this many without a graph, take the loss and its gradient "
        "on the cached embeddings, then re-run each chunk with a graph and push that gradient through it: the "
        "contrastive batch is no longer bounded by activation memory (pair datasets; CRE steps embed as usual). "
        "None = one forward with a graph"))
    optimizer_sharding: bool = Field(False, description=(
        "under torchrun: ZeRO-1 (torch's ZeroRedundancyOptimizer) shards the AdamW states over the ranks; "
        "parameters and gradients stay replicated (DDP)"))


ITEM_TASKS = {"i2i": "i2i", "q2i": "q2i", "omni2omni": "i2i"}   # eval task -> the dataset task it ranks
CROSS_MODAL_TASKS = {"image2text": "image", "frames2text": "frames", "audio2text": "audio"}   # eval task -> query modality
EvalTask = Literal["i2i", "q2i", "image2text", "frames2text", "audio2text", "omni2omni", "cls"]
REFERENCE_TASKS = ("i2i", "q2i", "cls")   # the tasks the plain text reference can do (it reads item text only)


class EvalConfig(_Strict):
    """Held-out evaluation: Recall@k for each of ``ks`` on each of ``tasks``."""

    ks: list[int] = Field(default_factory=lambda: [1, 10, 50])
    label_ks: list[int] = Field(default_factory=lambda: [1, 3], description=(
        "k of Recall@k for cls (an item -> its labels; few labels, so small k)"))
    tasks: list[EvalTask] = Field(
        default_factory=lambda: ["i2i", "q2i", "image2text", "frames2text", "audio2text", "omni2omni", "cls"]
    )
    batch_size: int = Field(128, ge=1)
    baseline: bool = Field(True, description=(
        "also score the untrained model (the gate's first reference by default); `sail ablate` turns it off"))
    reference: bool = Field(True, description=(
        "also score the plain text reference (all-MiniLM-L6-v2, mean pooling over title, year and genres, "
        "no instruction) on the same queries of i2i, q2i and cls"))

    @model_validator(mode="after")
    def _distinct(self) -> "EvalConfig":
        for name, ks in (("ks", self.ks), ("label_ks", self.label_ks)):
            if not ks or min(ks) < 1 or len(set(ks)) != len(ks):
                raise ValueError(f"eval.{name} must be distinct positive integers, got {ks}")
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"eval.tasks must be non-empty and distinct, got {self.tasks}")
        return self


REC_METRICS = tuple(
    [f"{task}.{kind}recall_at_{k}" for task in ("seq2item", "seq2item_cold") for kind in ("", "filtered.")
     for k in (1, 10, 25)]
    + ["gid_i2i.recall_at_50", "collab.kendall_tau", "collab.top10_overlap", "bijective.accuracy",
       "auc.with_embedding", "auc.without_embedding"])   # per-query recommendation metrics (sail_core/eval/recommendation.py)


def eval_metric_names(eval_cfg: EvalConfig, model: ModelConfig) -> list[str]:
    """The metric names the evaluate step logs for the candidate: ``eval.<task>.recall_at_<k>``, and for
    i2i and q2i also ``eval.<task>.dim<d>.recall_at_<k>`` for each Matryoshka dim below the full width; and the
    recommendation metrics of its catalogue index (:data:`REC_METRICS`), which the gate can also check."""
    width = embedding_width(model)
    smaller = [d for d in model.matryoshka_dims if d < width]
    names = []
    for task in eval_cfg.tasks:
        names += [f"eval.{task}.recall_at_{k}" for k in (eval_cfg.label_ks if task == "cls" else eval_cfg.ks)]
        if task in ("i2i", "q2i"):
            names += [f"eval.{task}.dim{d}.recall_at_{k}" for d in smaller for k in eval_cfg.ks]
    return names + [f"eval.{m}" for m in REC_METRICS]


GateRule = Literal["beats", "not_worse"]


class GateMetric(_Strict):
    """One gate check on the paired 95% interval of ``metric`` (candidate minus reference, same queries),
    compared with ``min_delta`` by the gate's rule (:class:`GateConfig`)."""

    metric: str = Field(description="a metric the evaluate step logs, e.g. eval.i2i.recall_at_10")
    min_delta: float = Field(0.0, description="the margin the difference is compared with (negative: allowed loss)")


class GateConfig(_Strict):
    """Promotion gate: for every entry, candidate metric minus reference metric must reach ``min_delta``.

    The reference is the champion, or the untrained baseline when there is none."""

    metrics: list[GateMetric] = Field(default_factory=lambda: [
        GateMetric(metric=f"eval.{task}.recall_at_10", min_delta=0.0) for task in ("i2i", "image2text", "audio2text")
    ])
    first_reference: Literal["untrained", "text_reference"] = Field("untrained", description=(
        "the reference when no champion exists: the untrained model, or the plain text reference "
        "(tasks it cannot do fall back to the untrained model)"))
    first_rule: GateRule = Field("beats", description=(
        "against the first reference: beats = interval low > min_delta; not_worse = interval high >= min_delta"))
    champion_rule: GateRule = Field("not_worse", description=(
        "against the champion re-scored: not_worse = interval high >= min_delta (the same model passes); "
        "beats = interval low > min_delta"))

    @model_validator(mode="after")
    def _distinct(self) -> "GateConfig":
        names = [m.metric for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"gate.metrics names a metric twice: {names}; keep one entry per metric")
        return self


class ServeLimits(_Strict):
    """What one request may hold; the backend refuses more before decoding anything
    (``serving/backend/embedder.py``'s ``Limits`` mirrors these fields and defaults)."""

    max_text_chars: int = Field(20_000, gt=0, description=(
        "characters of one TEXT entry (the model reads only its first model.max_length tokens)"))
    max_image_bytes: int = Field(10_000_000, gt=0, description="bytes of one IMAGE or FRAMES entry")
    max_image_pixels: int = Field(40_000_000, gt=0, description=(
        "width x height of one IMAGE or FRAMES entry, read from its header before any pixel is decoded"))
    max_audio_seconds: float = Field(120.0, gt=0, description=(
        "length of one AUDIO entry, from its WAV header (frames / rate) before any sample is read"))
    max_frames: int = Field(32, gt=0, description=(
        "FRAMES entries of one row; up to this many are subsampled to model.inputs.keyframes, more are refused"))
    max_rows: int | None = Field(None, gt=0, description=(
        "rows of one request; null = serve.max_batch_size (Triton refuses more than that itself)"))


class ServeConfig(_Strict):
    """The local Triton server, and the name the model has in its model repository."""

    host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=1, le=65535)
    grpc_port: int = Field(8001, ge=1, le=65535)
    metrics_port: int = Field(8002, ge=1, le=65535)
    triton_model: str = Field("sail_embedding", description="the model's name in the Triton model repository")
    max_batch_size: int = Field(64, ge=1)
    startup_timeout_s: float = Field(120.0, gt=0)
    limits: ServeLimits = ServeLimits()
    # How Triton runs the model on CPUs (written into config.pbtxt by serving/repository.py; the in-process
    # onnxruntime reference of bench/serving.py takes the same thread settings). See bench/README.md, "Serving".
    instances: int = Field(2, ge=1, description="CPU model instances (one python-backend process each)")
    max_queue_delay_us: int = Field(2000, ge=0, description="dynamic batching: longest wait for more requests")
    preferred_batch_sizes: list[int] = Field(default_factory=list, description=(
        "dynamic batching: batch sizes (rows) Triton sends as soon as it has them; empty = as large as possible"))
    intra_op_threads: int = Field(1, ge=0, description="onnxruntime threads per session; 0 = onnxruntime's default")
    inter_op_threads: int = Field(0, ge=0, description="onnxruntime inter-op threads; 0 = onnxruntime's default")
    allow_spinning: bool = Field(False, description="onnxruntime's idle threads spin (fast on idle cores, "
                                                    "wasteful on shared ones)")
    encoder_batch: int = Field(16, ge=0, description=(
        "rows per encoder call: a batch is sorted by text length and run in chunks of this many rows "
        "(less padding); 0 = the whole batch in one call"))
    vision_batch: int = Field(4, ge=1, description=(
        "images per vision_encoder.onnx call (on CPUs small batches run faster per image)"))

    @model_validator(mode="after")
    def _rows_within_batch(self) -> "ServeConfig":
        rows = self.limits.max_rows
        if rows is not None and rows > self.max_batch_size:
            raise ValueError(f"serve.limits.max_rows = {rows} is above serve.max_batch_size = {self.max_batch_size}: "
                             "Triton refuses a request of more than max_batch_size rows before the model sees it; "
                             "lower serve.limits.max_rows or raise serve.max_batch_size too")
        above = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if above:
            raise ValueError(f"serve.preferred_batch_sizes {above} must lie in 1..serve.max_batch_size = "
                             f"{self.max_batch_size} (Triton refuses the model otherwise); fix them in params.yaml")
        return self

    def backend_settings(self) -> dict[str, int | bool]:
        """How the backend runs onnxruntime (threads, spinning, encoder and vision batches): the keywords of
        ``serving.backend.embedder.OnnxEmbedder`` and the parameters of the CPU ``config.pbtxt``, so that
        Triton's backend and an in-process reference run with the same settings."""
        return {"intra_op_threads": self.intra_op_threads, "inter_op_threads": self.inter_op_threads,
                "allow_spinning": self.allow_spinning, "encoder_batch": self.encoder_batch,
                "vision_batch": self.vision_batch}

    def limit_values(self) -> dict[str, int | float]:
        """The request limits with ``max_rows`` resolved (null = ``max_batch_size``): what the backend enforces."""
        values = self.limits.model_dump()
        values["max_rows"] = self.limits.max_rows or self.max_batch_size
        return values


class RegistryConfig(_Strict):
    """MLflow: the registered model that versions are added to, and the experiment of pipeline runs."""

    mlflow_model: str = Field("sail-embedding", description="the MLflow registered model (aliases champion, challenger)")
    experiment: str = "sail-embedding"


class StoreConfig(_Strict):
    """Where a pipeline run keeps its state, so that a task on any worker finds it.

    ``workspaces`` and ``objects`` are URLs that fsspec understands (a local folder, ``file:///...``,
    ``s3://bucket/prefix`` with s3fs installed, ...); every worker must reach them. ``local_cache`` is
    this machine's copy of what a task pulled or pushed."""

    workspaces: str | None = Field(None, description=(
        "run workspaces, one folder per run id (the run's pointer file and training checkpoints); "
        "null = $SAIL_HOME/runs"))
    objects: str | None = Field(None, description=(
        "the DVC remote that holds data and model files, content-addressed in DVC's layout; "
        "null = $SAIL_HOME/dvc-remote"))
    local_cache: str | None = Field(None, description=(
        "this machine's cache of runs and objects; null = $SAIL_HOME/cache; 'per-task' = a fresh temporary "
        "folder for every task, removed after it (as a Celery or Kubernetes worker with an empty disk sees it)"))
    keep_runs: int = Field(5, ge=0, description="`sail gc` keeps the workspaces and files of the last N runs")


class IndexConfig(_Strict):
    """The catalogue index the ``index`` step builds with the candidate model (FAISS, inner product)."""

    kind: Literal["flat", "ivf", "hnsw"] = Field("flat", description="flat = exact; ivf / hnsw = approximate")
    nlist: int = Field(1024, ge=1, description="ivf: clusters (capped at catalogue size / 39)")
    nprobe: int = Field(16, ge=1, description="ivf: clusters searched per query")
    hnsw_m: int = Field(32, ge=4, description="hnsw: links per node")
    ef_search: int = Field(128, ge=1, description="hnsw: search breadth")
    batch_size: int = Field(256, ge=1, description="items embedded per batch, streamed to disk")
    sid_sizes: list[int] = Field(default_factory=lambda: [32, 16, 8], description=(
        "semantic IDs: codebook size of each residual k-means level (the `sid` step, served by Triton as SID)"))


class Config(_Strict):
    """The configuration of one profile: ``base`` merged with the profile and the overrides, checked."""

    profile: str = "demo"
    data: DataConfig = DataConfig()
    contracts: ContractsConfig = ContractsConfig()
    datasets: dict[str, DatasetConfig]
    model: ModelConfig = ModelConfig()
    train: TrainConfig
    eval: EvalConfig = EvalConfig()
    index: IndexConfig = IndexConfig()
    gate: GateConfig = GateConfig()
    serve: ServeConfig = ServeConfig()
    registry: RegistryConfig = RegistryConfig()
    store: StoreConfig = StoreConfig()
    cre: CreConfig = CreConfig()

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        """Settings that only make sense together; all problems are reported at once."""
        problems = self._dataset_problems() + self._stage_problems() + self._eval_problems() + self._gate_problems()
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def task_weight(self, name: str) -> float:
        """The configured sampling weight of a stage dataset: a pair dataset's, or a CRE task's (``cre.<task>``)."""
        return getattr(self.cre, name).weight if name in CRE_TASKS else self.datasets[name].weight

    def temperature_inits(self) -> dict[str, float]:
        """Initial InfoNCE temperature of every pair dataset and CRE task (one learnable tau each)."""
        return {**{n: d.temperature_init for n, d in self.datasets.items()},
                **{n: getattr(self.cre, n).temperature_init for n in CRE_TASKS}}

    def _dataset_problems(self) -> list[str]:
        if not self.datasets:
            return ["datasets is empty; define at least one pair dataset (task, patterns, ...) under base.datasets"]
        return []

    def _stage_problems(self) -> list[str]:
        problems, allowed = [], ", ".join(sorted(self.datasets)) or "(none defined)"
        if not self.train.stages:
            problems.append("train.stages is empty; list at least one stage (name, datasets, steps, ...)")
        seen: set[str] = set()
        for i, stage in enumerate(self.train.stages):
            if stage.name in seen:
                problems.append(f"train.stages.{i}.name: stage {stage.name!r} is listed twice; stage names must be distinct")
            seen.add(stage.name)
            if not stage.datasets:
                problems.append(f"train.stages.{i}.datasets is empty; list datasets to train on; allowed: {allowed}")
            for j, name in enumerate(stage.datasets):
                if name not in self.datasets and name not in CRE_TASKS:
                    problems.append(f"train.stages.{i}.datasets.{j}: unknown dataset {name!r}; allowed: {allowed}, "
                                    f"and the CRE tasks {', '.join(CRE_TASKS)}")
            cre = [n for n in stage.datasets if n in CRE_TASKS]
            if cre and stage.balance:
                problems.append(f"train.stages.{i} ({stage.name!r}): balance: true with the CRE tasks {cre}; balancing "
                                "matches pair datasets only, so set balance: false in this stage")
            for j, name in enumerate(stage.hard_negative_datasets):
                if name not in stage.datasets:
                    problems.append(f"train.stages.{i}.hard_negative_datasets.{j}: {name!r} is not one of the stage's "
                                    f"datasets {stage.datasets}; list it in datasets too or remove it")
                elif name in self.datasets and self.datasets[name].task == "cls":
                    problems.append(f"train.stages.{i}.hard_negative_datasets.{j}: {name!r} has text targets (cls); "
                                    "hard negatives are items, so remove it")
            if bool(stage.hard_negatives) != bool(stage.hard_negative_datasets):
                problems.append(f"train.stages.{i} ({stage.name!r}): hard_negatives = {stage.hard_negatives} and "
                                f"hard_negative_datasets = {stage.hard_negative_datasets}; set both (negatives per "
                                "query and the datasets that get them) or neither")
            if stage.warmup_steps >= stage.steps:
                problems.append(f"train.stages.{i}.warmup_steps = {stage.warmup_steps} must be smaller than "
                                f"train.stages.{i}.steps = {stage.steps} (stage {stage.name!r}); allowed: 0..{stage.steps - 1}")
        return problems

    def _eval_problems(self) -> list[str]:
        problems = []
        tasks = {name: d.task for name, d in self.datasets.items()}
        for j, task in enumerate(self.eval.tasks):
            kind = ITEM_TASKS.get(task)
            if kind and kind not in tasks.values():
                problems.append(f"eval.tasks.{j} = {task!r} ranks the test pairs of datasets with task {kind!r}, and no "
                                f"dataset has it (datasets: {tasks}); add one or remove {task!r} from eval.tasks")
        return problems

    def _gate_problems(self) -> list[str]:
        problems = []
        allowed = eval_metric_names(self.eval, self.model)
        for i, gate in enumerate(self.gate.metrics):
            if gate.metric not in allowed:
                problems.append(
                    f"gate.metrics.{i}.metric = {gate.metric!r} is not logged by evaluation with eval.tasks "
                    f"{list(self.eval.tasks)} and eval.ks {list(self.eval.ks)}; allowed: {', '.join(allowed)}")
                continue
            task = gate.metric.split(".")[1]
            modality = CROSS_MODAL_TASKS.get(task)
            if modality and not any(f"{modality}->text" in d.patterns for d in self.datasets.values()):
                problems.append(
                    f"gate.metrics.{i}.metric = {gate.metric!r}: evaluation skips {task} because no dataset lists "
                    f"the pattern {modality}->text; add it to a dataset's patterns or gate on another metric")
        return problems
