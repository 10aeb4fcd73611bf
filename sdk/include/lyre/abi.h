/*
 * lyre plugin ABI, version 1.
 *
 * The whole contract between the lyre host and a plugin (backend, objective, checkpointer).
 * Pure C: a plugin may be written in any language that can export a C symbol. The header is the
 * documentation; nobody should need the host's source to implement it.
 *
 * Rules (see DESIGN.md, "ABI rules"):
 *  - A plugin exports exactly one symbol, lyre_plugin_init. Everything else stays hidden.
 *  - The host rejects a plugin whose LYRE_ABI_MAJOR differs from its own. A minor bump only
 *    appends: fields at the end of structs, entries at the end of function tables.
 *  - Every struct that crosses begins with `size_t struct_size` (set by whoever fills the struct
 *    in, to sizeof of the struct it was compiled against). A callee reads only the fields that
 *    lie inside struct_size; fields beyond it take their documented default.
 *  - Every call returns LyreError* (NULL = success). Errors are made only through
 *    LyreHostApi.error_new and are owned by the host. No C++ exception crosses the boundary.
 *  - Tensors cross as DLPack DLTensor, borrowed for the duration of the call unless a field says
 *    otherwise. Ownership moves only through explicit create/destroy pairs; whoever allocates
 *    frees, through the same table. Strings handed out are borrowed; the receiver copies.
 *  - Configuration crosses as JSON text. Each plugin validates its own keys and rejects an
 *    unknown key with an error that names it.
 *  - The host never unloads a library while an object it made is alive.
 *
 * Threading: the host calls a plugin from one thread at a time per object. A plugin may use
 * threads internally (OpenMP, CUDA streams); it must not call host services from them except
 * LyreHostApi.log and LyreHostApi.error_new, which are thread-safe.
 */
#ifndef LYRE_ABI_H_
#define LYRE_ABI_H_

#include <stddef.h>
#include <stdint.h>

#include <dlpack/dlpack.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LYRE_ABI_MAJOR 1
#define LYRE_ABI_MINOR 1

/* The one symbol a plugin exports. */
#define LYRE_PLUGIN_ENTRY_SYMBOL "lyre_plugin_init"

/* ---- Errors ---- */

/* Opaque; made by LyreHostApi.error_new, owned and freed by the host. A plugin that receives an
 * error from a host service may return it as its own result (ownership goes back to the host). */
typedef struct LyreError LyreError;

typedef enum LyreErrorCode {
  LYRE_ERROR_INVALID_ARGUMENT = 1, /* bad config key or value, bad shape, bad dtype */
  LYRE_ERROR_NOT_FOUND = 2,        /* a named parameter, file or device does not exist */
  LYRE_ERROR_UNIMPLEMENTED = 3,    /* an optional capability this plugin does not have */
  LYRE_ERROR_OUT_OF_MEMORY = 4,
  LYRE_ERROR_FAILED_PRECONDITION = 5, /* called in the wrong order (backward before forward) */
  LYRE_ERROR_UNAVAILABLE = 6,      /* the device or a library it needs cannot be used here */
  LYRE_ERROR_INTERNAL = 7
} LyreErrorCode;

/* ---- Host services ---- */

typedef enum LyreLogLevel {
  LYRE_LOG_DEBUG = 0,
  LYRE_LOG_INFO = 1,
  LYRE_LOG_WARNING = 2,
  LYRE_LOG_ERROR = 3
} LyreLogLevel;

/* Reduction over all ranks of the job. */
typedef enum LyreReduceOp { LYRE_REDUCE_SUM = 0, LYRE_REDUCE_MAX = 1 } LyreReduceOp;

/*
 * What the host offers every plugin. Handed to lyre_plugin_init; valid until the library is
 * unloaded. The first three fields are frozen across all ABI majors, so that a plugin built for
 * another major can still read the host's version.
 */
typedef struct LyreHostApi {
  size_t struct_size;
  uint32_t abi_major; /* the host's LYRE_ABI_MAJOR */
  uint32_t abi_minor; /* the host's LYRE_ABI_MINOR */

  /* Makes an error. `message` is copied; it should say what was wrong and where (key, file,
   * tensor name). Thread-safe. Never returns NULL. */
  LyreError* (*error_new)(int32_t code, const char* message);

  /* Writes one log line, attributed to `plugin` (may be NULL). Both strings are copied.
   * Thread-safe. */
  void (*log)(int32_t level, const char* plugin, const char* message);

  /* This process's place in the job: rank in [0, world_size). 0 and 1 without MPI. */
  int32_t rank;
  int32_t world_size;

  /* In-place reduction of `count` float32 values in host memory across all ranks. With one
   * rank it returns at once and leaves the data unchanged. Blocking; every rank must call it
   * with the same count. */
  LyreError* (*all_reduce_f32)(float* data, size_t count, int32_t op /* LyreReduceOp */);

  /* Copies `bytes` bytes of host memory from rank `root` to every other rank. Blocking. */
  LyreError* (*broadcast)(void* data, size_t bytes, int32_t root);

  /* ---- since ABI 1.1: profiler spans (read only when struct_size covers them) ---- */

  /* 1 while the host's profiler records (the steps it was asked to trace), else 0. A plugin
   * checks it before timing anything, so spans cost nothing outside the recorded steps.
   * Thread-safe. */
  int32_t (*trace_enabled)(void);
  /* Records one finished span of work the plugin did: `name` ("layer 3 attention forward") and
   * `category` ("forward", "backward", "optimizer"; may be NULL) are copied; begin_ns and end_ns
   * are CLOCK_MONOTONIC nanoseconds (std::chrono::steady_clock on Linux). Spans from several
   * threads are kept apart by thread. Ignored while trace_enabled() is 0. Thread-safe. */
  void (*trace_span)(const char* plugin, const char* category, const char* name, int64_t begin_ns,
                     int64_t end_ns);
} LyreHostApi;

/* ---- Common types ---- */

typedef struct LyreBackend LyreBackend; /* reserved: backends are process-wide in v1 */
typedef struct LyreModel LyreModel;
typedef struct LyreOptimizer LyreOptimizer;
typedef struct LyreObjective LyreObjective;
typedef struct LyreCheckpointer LyreCheckpointer;

/*
 * One micro-batch, as the data loader made it. All tensors are int32 [B, T], row-major, in host
 * memory (device_type kDLCPU), borrowed for the call.
 *   tokens       input token ids.
 *   targets      the token each position should predict; < 0 where nothing is predicted
 *                (padding, the last token of a document). The model writes logp = 0 there.
 *   positions    position of the token inside its own document (RoPE index), starting at 0.
 *   segment_ids  document number of the token inside the row, >= 1; 0 marks padding. A token
 *                attends to tokens of the same row, same segment, at the same or an earlier
 *                column. Packed rows hold several segments.
 *   loss_mask    1 where the target belongs to the part an objective trains on (the completion
 *                of a prompt/completion record; every token of a text record), else 0.
 *                Objectives decide whether to use it; the model ignores it.
 */
typedef struct LyreBatch {
  size_t struct_size;
  const DLTensor* tokens;
  const DLTensor* targets;
  const DLTensor* positions;
  const DLTensor* segment_ids;
  const DLTensor* loss_mask;
} LyreBatch;

/* One named scalar reported by a plugin. `name` is borrowed (see the call that returns it). */
typedef struct LyreMetric {
  size_t struct_size;
  const char* name;
  double value;
} LyreMetric;

/* ---- Backend ---- */

typedef struct LyreBackend_Score_Args {
  size_t struct_size;
  int32_t score;      /* out: 0 = cannot run here; higher is preferred (CPU backend: 100) */
  const char* reason; /* out: why the score is 0, or a short description otherwise; static
                         string owned by the plugin, never NULL */
} LyreBackend_Score_Args;

typedef struct LyreBackend_DeviceInfo_Args {
  size_t struct_size;
  int32_t device_index;        /* which device; 0 for the CPU */
  const char* name;            /* out: e.g. "cpu: 2 threads, avx2+fma"; valid until the library
                                  is unloaded */
  uint64_t memory_total_bytes; /* out: 0 when unknown */
  uint64_t memory_used_bytes;  /* out: bytes this backend holds now (parameters, gradients,
                                  optimizer state, activations, workspaces) */
  uint64_t memory_peak_bytes;  /* out: the most it has held since initialize */
  double peak_flops;           /* out: the backend's stated dense peak FLOP/s for its training
                                  precision, the denominator of MFU; 0 when unknown */
} LyreBackend_DeviceInfo_Args;

typedef struct LyreBackend_Synchronize_Args {
  size_t struct_size;
  int32_t device_index;
} LyreBackend_Synchronize_Args;

typedef struct LyreBackend_AllReduceGradients_Args {
  size_t struct_size;
  LyreModel* model; /* sum the gradients of its trainable parameters over all ranks, in place */
} LyreBackend_AllReduceGradients_Args;

typedef struct LyreBackendApi {
  size_t struct_size;
  /* Cheap "can I run here", called BEFORE LyrePluginApi.initialize: checks CPU features,
   * driver, devices. Must not allocate device memory or start threads. Required. */
  LyreError* (*score)(LyreBackend_Score_Args* args);
  /* Required. */
  LyreError* (*device_info)(LyreBackend_DeviceInfo_Args* args);
  /* Waits for all queued work on the device. Required (a CPU backend returns at once). */
  LyreError* (*synchronize)(LyreBackend_Synchronize_Args* args);
  /* Gradient all-reduce across ranks with the backend's own transport (NCCL). Optional: NULL
   * means the host reduces gradients itself through LyreModel_ReadTensor/WriteTensor and
   * LyreHostApi.all_reduce_f32. */
  LyreError* (*all_reduce_gradients)(LyreBackend_AllReduceGradients_Args* args);
} LyreBackendApi;

/* ---- Model ---- */

/* What a parameter is, for initialisation and optimizer groups (no weight decay on norms). */
typedef enum LyreParamKind {
  LYRE_PARAM_MATRIX = 0,    /* linear weight [out, in] */
  LYRE_PARAM_EMBEDDING = 1, /* token embedding [vocab, d] (and an untied lm_head) */
  LYRE_PARAM_NORM = 2,      /* RMSNorm / LayerNorm scale, initialised to 1 */
  LYRE_PARAM_BIAS = 3,      /* initialised to 0 */
  LYRE_PARAM_ADAPTER_A = 4, /* LoRA A (later) */
  LYRE_PARAM_ADAPTER_B = 5  /* LoRA B (later), initialised to 0 */
} LyreParamKind;

typedef struct LyreModel_Create_Args {
  size_t struct_size;
  const char* config_json;  /* Hugging Face config.json text. Borrowed for the call. Required. */
  const char* options_json; /* backend options, e.g. {"precision": "fp32", "threads": 2};
                               NULL = defaults. Unknown keys are an error. */
  const char* lora_json;    /* LoRA config ({"r":..,"alpha":..,"target_modules":[..]}); NULL =
                               full-parameter training. A backend without LoRA returns
                               LYRE_ERROR_UNIMPLEMENTED when it is not NULL. */
  int32_t device_index;
  LyreModel* model;         /* out: destroy with LyreModelApi.destroy */
} LyreModel_Create_Args;

typedef struct LyreModel_Destroy_Args {
  size_t struct_size;
  LyreModel* model;
} LyreModel_Destroy_Args;

typedef struct LyreModel_NumParameters_Args {
  size_t struct_size;
  LyreModel* model;
  size_t num_parameters; /* out */
} LyreModel_NumParameters_Args;

/* Describes parameter `index` in [0, num_parameters). Names follow Hugging Face's
 * (model.layers.0.self_attn.q_proj.weight). */
typedef struct LyreModel_Parameter_Args {
  size_t struct_size;
  LyreModel* model;
  size_t index;
  const char* name;       /* out: valid while the model lives */
  int32_t kind;           /* out: LyreParamKind */
  int32_t trainable;      /* out: 1 if the optimizer updates it and backward fills its grad */
  int32_t ndim;           /* out: <= 4 */
  int64_t shape[4];       /* out: logical shape, row-major */
  DLDataType dtype;       /* out: dtype of the master copy (float32 in v1 backends) */
} LyreModel_Parameter_Args;

typedef enum LyreTensorWhich {
  LYRE_TENSOR_VALUE = 0, /* the parameter itself (master weights) */
  LYRE_TENSOR_GRAD = 1   /* its accumulated gradient */
} LyreTensorWhich;

/* Copies parameter `index` (value or gradient) out of the backend into `dst`, a contiguous
 * host tensor of the parameter's shape. float32 always works; a backend may accept other
 * dtypes and convert. */
typedef struct LyreModel_ReadTensor_Args {
  size_t struct_size;
  LyreModel* model;
  size_t index;
  int32_t which;        /* LyreTensorWhich */
  const DLTensor* dst;  /* host, contiguous, borrowed for the call */
} LyreModel_ReadTensor_Args;

/* Copies `src` into parameter `index` (value or gradient). Loading weights is a WriteTensor per
 * parameter; float32, bfloat16 and float16 sources must be accepted and converted. */
typedef struct LyreModel_WriteTensor_Args {
  size_t struct_size;
  LyreModel* model;
  size_t index;
  int32_t which;        /* LyreTensorWhich */
  const DLTensor* src;  /* host, contiguous, borrowed for the call */
} LyreModel_WriteTensor_Args;

typedef enum LyreForwardMode {
  LYRE_FORWARD_TRAIN = 0,       /* keeps what backward needs */
  LYRE_FORWARD_NO_GRAD = 1,     /* evaluation: keeps nothing */
  LYRE_FORWARD_ADAPTERS_OFF = 2 /* like NO_GRAD with LoRA adapters bypassed: the frozen base
                                   model as DPO's reference. A model without adapters treats it
                                   as NO_GRAD. */
} LyreForwardMode;

/* Per-token log-probabilities of the targets: logp[b,t] = log softmax(logits[b,t])[targets[b,t]],
 * 0 where targets < 0. The backend never materialises [B,T,vocab] logits at once. */
typedef struct LyreModel_Forward_Args {
  size_t struct_size;
  LyreModel* model;
  const LyreBatch* batch;
  int32_t mode;          /* LyreForwardMode */
  const DLTensor* logp;  /* out: float32 [B,T] host tensor the caller allocated; the backend
                            writes into it */
} LyreModel_Forward_Args;

/* Adds d(loss)/d(parameters) to the gradients of trainable parameters, given d(loss)/d(logp) for
 * the batch of the latest LYRE_FORWARD_TRAIN forward. Gradients accumulate across calls until
 * zero_grad (micro-batching). Calling it without a preceding train forward is
 * LYRE_ERROR_FAILED_PRECONDITION. Releases the saved activations. */
typedef struct LyreModel_Backward_Args {
  size_t struct_size;
  LyreModel* model;
  const DLTensor* dlogp; /* float32 [B,T] host tensor, same shape as the forward's logp */
} LyreModel_Backward_Args;

typedef struct LyreModel_ZeroGrad_Args {
  size_t struct_size;
  LyreModel* model;
} LyreModel_ZeroGrad_Args;

/* Sampling for generate. temperature 0 means greedy (argmax). */
typedef struct LyreSamplingParams {
  size_t struct_size;
  float temperature; /* 0 = greedy */
  int32_t top_k;     /* 0 = off */
  float top_p;       /* 1 = off */
  uint64_t seed;     /* for temperature > 0 */
} LyreSamplingParams;

/* Autoregressive generation with a KV cache. Row b of `prompt` holds prompt_lengths[b] tokens
 * (right-padded). The backend writes up to max_new_tokens tokens per row into `out_tokens`,
 * stopping a row at eos_token_id (which is written) and records how many it wrote. */
typedef struct LyreModel_Generate_Args {
  size_t struct_size;
  LyreModel* model;
  const DLTensor* prompt;         /* int32 [B, Tp] host */
  const DLTensor* prompt_lengths; /* int32 [B] host, each in [1, Tp] */
  int32_t max_new_tokens;
  int32_t eos_token_id;           /* < 0: none */
  const LyreSamplingParams* sampling;
  const DLTensor* out_tokens;     /* out: int32 [B, max_new_tokens] host, caller-allocated */
  const DLTensor* out_lengths;    /* out: int32 [B] host, caller-allocated */
} LyreModel_Generate_Args;

/* Facts the host needs for its log line. */
typedef struct LyreModel_Stats_Args {
  size_t struct_size;
  LyreModel* model;
  int64_t seq_len;               /* the row length T the FLOPs are counted for */
  double train_flops_per_token;  /* out: forward + backward FLOPs per token (matmuls and
                                    attention), the numerator of MFU */
  int64_t num_parameters_total;  /* out: scalar count */
  int64_t num_parameters_trainable; /* out */
} LyreModel_Stats_Args;

typedef struct LyreModelApi {
  size_t struct_size;
  LyreError* (*create)(LyreModel_Create_Args* args);
  LyreError* (*destroy)(LyreModel_Destroy_Args* args);
  LyreError* (*num_parameters)(LyreModel_NumParameters_Args* args);
  LyreError* (*parameter)(LyreModel_Parameter_Args* args);
  LyreError* (*read_tensor)(LyreModel_ReadTensor_Args* args);
  LyreError* (*write_tensor)(LyreModel_WriteTensor_Args* args);
  LyreError* (*forward)(LyreModel_Forward_Args* args);
  LyreError* (*backward)(LyreModel_Backward_Args* args);
  LyreError* (*zero_grad)(LyreModel_ZeroGrad_Args* args);
  LyreError* (*stats)(LyreModel_Stats_Args* args);
  /* Optional (NULL = the backend cannot generate). */
  LyreError* (*generate)(LyreModel_Generate_Args* args);
} LyreModelApi;

/* ---- Optimizer ---- */

/* The optimizer belongs to the plugin that made the model: it updates the model's parameters
 * where they live. */
typedef struct LyreOptimizer_Create_Args {
  size_t struct_size;
  LyreModel* model;        /* must come from the same plugin; outlives the optimizer */
  const char* config_json; /* {"type": "adamw", "betas": [0.9, 0.999], "eps": 1e-8,
                              "weight_decay": 0.01, "no_decay_kinds": ["norm", "bias"]};
                              the learning rate comes per step. Unknown keys are an error. */
  LyreOptimizer* optimizer; /* out */
} LyreOptimizer_Create_Args;

typedef struct LyreOptimizer_Destroy_Args {
  size_t struct_size;
  LyreOptimizer* optimizer;
} LyreOptimizer_Destroy_Args;

/* Sum of squares of every trainable gradient this rank holds, for global-norm clipping; the
 * host adds it across ranks and takes the root. */
typedef struct LyreOptimizer_GradSquaredNorm_Args {
  size_t struct_size;
  LyreOptimizer* optimizer;
  double squared_norm; /* out */
} LyreOptimizer_GradSquaredNorm_Args;

/* One update: every gradient is multiplied by grad_scale first (clipping, 1 = none), then the
 * update rule runs with learning rate lr. Gradients are left as they were (the host zeroes). */
typedef struct LyreOptimizer_Step_Args {
  size_t struct_size;
  LyreOptimizer* optimizer;
  double lr;
  double grad_scale;
} LyreOptimizer_Step_Args;

typedef struct LyreOptimizer_NumStates_Args {
  size_t struct_size;
  LyreOptimizer* optimizer;
  size_t num_states; /* out */
} LyreOptimizer_NumStates_Args;

/* Optimizer state `index` in [0, num_states), for checkpoints: e.g.
 * "model.norm.weight.exp_avg" float32 of the parameter's shape, or "step" int64 [1]. */
typedef struct LyreOptimizer_State_Args {
  size_t struct_size;
  LyreOptimizer* optimizer;
  size_t index;
  const char* name;  /* out: valid while the optimizer lives */
  int32_t ndim;      /* out: <= 4 */
  int64_t shape[4];  /* out */
  DLDataType dtype;  /* out */
} LyreOptimizer_State_Args;

/* Copies state `index` into or out of a contiguous host tensor of its shape and dtype. */
typedef struct LyreOptimizer_StateTensor_Args {
  size_t struct_size;
  LyreOptimizer* optimizer;
  size_t index;
  const DLTensor* tensor; /* host, borrowed for the call */
} LyreOptimizer_StateTensor_Args;

typedef struct LyreOptimizerApi {
  size_t struct_size;
  LyreError* (*create)(LyreOptimizer_Create_Args* args);
  LyreError* (*destroy)(LyreOptimizer_Destroy_Args* args);
  LyreError* (*grad_squared_norm)(LyreOptimizer_GradSquaredNorm_Args* args);
  LyreError* (*step)(LyreOptimizer_Step_Args* args);
  /* State enumeration for checkpoints. Optional as a group (all NULL = no resumable state). */
  LyreError* (*num_states)(LyreOptimizer_NumStates_Args* args);
  LyreError* (*state)(LyreOptimizer_State_Args* args);
  LyreError* (*read_state)(LyreOptimizer_StateTensor_Args* args);
  LyreError* (*write_state)(LyreOptimizer_StateTensor_Args* args);
} LyreOptimizerApi;

/* ---- Objective (the Loss slot) ---- */

typedef struct LyreObjective_Create_Args {
  size_t struct_size;
  const char* config_json;       /* objective-specific keys; NULL = defaults */
  LyreObjective* objective;      /* out */
  int32_t needs_reference_logp;  /* out: 1 = the host must also run a LYRE_FORWARD_ADAPTERS_OFF
                                    (or frozen reference model) pass and pass reference_logp */
  int32_t needs_paired_rows;     /* out: 1 = rows come in (chosen, rejected) pairs: row 2i is
                                    chosen, row 2i+1 rejected */
} LyreObjective_Create_Args;

typedef struct LyreObjective_Destroy_Args {
  size_t struct_size;
  LyreObjective* objective;
} LyreObjective_Destroy_Args;

/* How much this micro-batch adds to the optimizer step's normaliser (tokens for a token-mean
 * loss, pairs for DPO). The host sums it over all micro-batches and ranks of the step before
 * the first compute, so that micro-batching and data parallelism leave the gradient unchanged. */
typedef struct LyreObjective_Normalizer_Args {
  size_t struct_size;
  LyreObjective* objective;
  const LyreBatch* batch;
  double normalizer; /* out */
} LyreObjective_Normalizer_Args;

/* loss = (this micro-batch's sum of per-item losses) / normalizer, so summing loss over the
 * step's micro-batches gives the step's mean loss. dlogp = d(loss)/d(policy_logp). */
typedef struct LyreObjective_Compute_Args {
  size_t struct_size;
  LyreObjective* objective;
  const LyreBatch* batch;
  const DLTensor* policy_logp;    /* float32 [B,T] host */
  const DLTensor* reference_logp; /* float32 [B,T] host; NULL unless needs_reference_logp */
  double normalizer;              /* the whole step's, > 0 */
  double loss;                    /* out */
  const DLTensor* dlogp;          /* out: float32 [B,T] host, caller-allocated; fully written */
  const LyreMetric* metrics;      /* out: extra scalars, contributions the host sums over the
                                     step's micro-batches like the loss; valid until the next call
                                     on this objective; may be NULL */
  size_t num_metrics;             /* out */
} LyreObjective_Compute_Args;

typedef struct LyreObjectiveApi {
  size_t struct_size;
  const char* name; /* the name configs use, e.g. "sft"; static */
  LyreError* (*create)(LyreObjective_Create_Args* args);
  LyreError* (*destroy)(LyreObjective_Destroy_Args* args);
  LyreError* (*normalizer)(LyreObjective_Normalizer_Args* args);
  LyreError* (*compute)(LyreObjective_Compute_Args* args);
} LyreObjectiveApi;

/* ---- Checkpointer ---- */

typedef struct LyreCheckpointer_Create_Args {
  size_t struct_size;
  const char* config_json; /* the checkpointer's own keys, e.g. {"save_dir": "ckpt",
                              "max_to_keep": 5, "async": true}; the host decides when to save.
                              Unknown keys are an error. */
  LyreCheckpointer* checkpointer; /* out */
} LyreCheckpointer_Create_Args;

typedef struct LyreCheckpointer_Destroy_Args {
  size_t struct_size;
  LyreCheckpointer* checkpointer; /* waits for pending saves */
} LyreCheckpointer_Destroy_Args;

/* Saves one checkpoint for `step`. The tensors are host memory borrowed for the call: an async
 * checkpointer copies them before returning. A checkpoint becomes visible to list/load only
 * once complete (atomic rename); retention deletes only complete old checkpoints.
 * Tensor names are "<group>/<name>": the host sends "model/<parameter name>" for parameters and
 * "optimizer/<state name>" for optimizer state; a checkpointer may store groups apart (one
 * safetensors file per group) and must give the same names back from load. An error from an
 * earlier asynchronous save is returned by the next save, wait or destroy. */
typedef struct LyreCheckpointer_Save_Args {
  size_t struct_size;
  LyreCheckpointer* checkpointer;
  int64_t step;
  size_t num_tensors;
  const char* const* names;        /* [num_tensors] */
  const DLTensor* const* tensors;  /* [num_tensors], host */
  const char* metadata_json;       /* trainer state: step, epoch, data position, RNG, config
                                      hash */
} LyreCheckpointer_Save_Args;

typedef struct LyreCheckpointer_Wait_Args {
  size_t struct_size;
  LyreCheckpointer* checkpointer; /* returns when every pending save is complete (or failed) */
} LyreCheckpointer_Wait_Args;

/* Lists complete checkpoints as JSON text: [{"step": 100, "path": ".."}, ...], oldest first. */
typedef struct LyreCheckpointer_List_Args {
  size_t struct_size;
  LyreCheckpointer* checkpointer;
  const char* json; /* out: valid until the next call on this checkpointer */
} LyreCheckpointer_List_Args;

/* Opens checkpoint `step` (-1 = newest complete). The tensors and metadata stay valid until the
 * next load or destroy on this checkpointer. */
typedef struct LyreCheckpointer_Load_Args {
  size_t struct_size;
  LyreCheckpointer* checkpointer;
  int64_t step;
  int64_t loaded_step;             /* out */
  size_t num_tensors;              /* out */
  const char* const* names;        /* out */
  const DLTensor* const* tensors;  /* out: host */
  const char* metadata_json;       /* out */
} LyreCheckpointer_Load_Args;

typedef struct LyreCheckpointerApi {
  size_t struct_size;
  LyreError* (*create)(LyreCheckpointer_Create_Args* args);
  LyreError* (*destroy)(LyreCheckpointer_Destroy_Args* args);
  LyreError* (*save)(LyreCheckpointer_Save_Args* args);
  LyreError* (*wait)(LyreCheckpointer_Wait_Args* args);
  LyreError* (*list)(LyreCheckpointer_List_Args* args);
  LyreError* (*load)(LyreCheckpointer_Load_Args* args);
} LyreCheckpointerApi;

/* ---- The plugin ---- */

typedef enum LyreSlot {
  LYRE_SLOT_BACKEND = 1u << 0,
  LYRE_SLOT_MODEL = 1u << 1,
  LYRE_SLOT_OPTIMIZER = 1u << 2,
  LYRE_SLOT_OBJECTIVE = 1u << 3,
  LYRE_SLOT_CHECKPOINTER = 1u << 4
} LyreSlot;

typedef struct LyreInitialize_Args {
  size_t struct_size;
  const char* options_json; /* plugin-wide options; NULL = defaults */
} LyreInitialize_Args;

/*
 * What lyre_plugin_init returns: a static table, valid until the library is unloaded. The first
 * three fields are frozen across all ABI majors. A slot table is NULL when the plugin does not
 * fill that slot; `slots` says the same as a bit mask.
 */
typedef struct LyrePluginApi {
  size_t struct_size;
  uint32_t abi_major; /* the LYRE_ABI_MAJOR the plugin was built against */
  uint32_t abi_minor;

  const char* name;        /* "backend-cpu"; static */
  const char* version;     /* the plugin's own version, "0.1.0"; static */
  const char* description; /* one line; static */
  uint32_t slots;          /* LyreSlot bits */

  /* Heavy initialisation (thread pools, device contexts), called once after the host accepted
   * the version and, for a backend, chose it by score. Optional: NULL = nothing to do. */
  LyreError* (*initialize)(LyreInitialize_Args* args);
  /* Called once before unloading, after every object the plugin made was destroyed. Optional. */
  void (*shutdown)(void);

  const LyreBackendApi* backend;
  const LyreModelApi* model;
  const LyreOptimizerApi* optimizer;
  const LyreObjectiveApi* objective;
  const LyreCheckpointerApi* checkpointer;
} LyrePluginApi;

/*
 * The entry point. Cheap: stores `host` and returns the plugin's static table; no threads, no
 * allocation beyond statics, no device calls. A plugin built for another ABI major must still
 * return its table (the host reads the frozen prefix and refuses it with both versions named).
 * Returns NULL only if the plugin cannot describe itself at all.
 */
typedef const LyrePluginApi* (*LyrePluginInitFn)(const LyreHostApi* host);

#ifdef __cplusplus
} /* extern "C" */
#endif

#ifdef __cplusplus
/* Pin the layouts so that an accidental insertion fails the build (x86_64 / aarch64 LP64). */
static_assert(sizeof(void*) != 8 || sizeof(LyreHostApi) == 72, "LyreHostApi layout changed");
static_assert(sizeof(void*) != 8 || sizeof(LyreBatch) == 48, "LyreBatch layout changed");
static_assert(sizeof(void*) != 8 || sizeof(LyreMetric) == 24, "LyreMetric layout changed");
static_assert(sizeof(void*) != 8 || sizeof(LyreBackend_Score_Args) == 24, "layout changed");
static_assert(sizeof(void*) != 8 || sizeof(LyreBackend_DeviceInfo_Args) == 56, "layout changed");
static_assert(sizeof(void*) != 8 || sizeof(LyreBackendApi) == 40, "LyreBackendApi layout changed");
static_assert(sizeof(void*) != 8 || sizeof(LyreModel_Create_Args) == 48, "layout changed");
static_assert(sizeof(void*) != 8 || sizeof(LyreModel_Parameter_Args) == 88, "layout changed");
static_assert(sizeof(void*) != 8 || sizeof(LyreModel_ReadTensor_Args) == 40, "layout changed");
static_assert(sizeof(void*) != 8 || sizeof(LyreModel_Forward_Args) == 40, "layout changed");
static_assert(sizeof(void*) != 8 || sizeof(LyreModel_Generate_Args) == 64, "layout changed");
static_assert(sizeof(void*) != 8 || sizeof(LyreModel_Stats_Args) == 48, "layout changed");
static_assert(sizeof(void*) != 8 || sizeof(LyreModelApi) == 96, "LyreModelApi layout changed");
static_assert(sizeof(void*) != 8 || sizeof(LyreOptimizer_Step_Args) == 32, "layout changed");
static_assert(sizeof(void*) != 8 || sizeof(LyreOptimizer_State_Args) == 80, "layout changed");
static_assert(sizeof(void*) != 8 || sizeof(LyreOptimizerApi) == 72, "LyreOptimizerApi changed");
static_assert(sizeof(void*) != 8 || sizeof(LyreObjective_Create_Args) == 32, "layout changed");
static_assert(sizeof(void*) != 8 || sizeof(LyreObjective_Compute_Args) == 80, "layout changed");
static_assert(sizeof(void*) != 8 || sizeof(LyreObjectiveApi) == 48, "LyreObjectiveApi changed");
static_assert(sizeof(void*) != 8 || sizeof(LyreCheckpointer_Save_Args) == 56, "layout changed");
static_assert(sizeof(void*) != 8 || sizeof(LyreCheckpointer_Load_Args) == 64, "layout changed");
static_assert(sizeof(void*) != 8 || sizeof(LyreCheckpointerApi) == 56, "changed");
static_assert(sizeof(void*) != 8 || sizeof(LyrePluginApi) == 104, "LyrePluginApi layout changed");
#endif

#endif /* LYRE_ABI_H_ */
