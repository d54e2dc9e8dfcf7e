"""Full-trace payload: compact numeric arrays as span events, under a byte budget.

The payload rides along only in `full` capture, or in `on_risk` when the run crossed the risk
threshold or raised a critical flag (the handler decides; this module only encodes). It holds
the per-step, per-layer summaries, the per-sequence analysis and the prompt telemetry, so that
the `report` package can rebuild the full report from a finished span alone. No token text, ever; token
ids only when content capture is on. Without it the steps carry a token *pattern* instead
(`token_pattern`: each token replaced by the order of its first appearance in the run, so
`[812, 47, 812, 47]` becomes `[0, 1, 0, 1]`): repetition analysis needs which steps chose the
same token, never which token it was, and the pattern does not decode to text.

Events (format version 2; docs/payload.md has the full description)
--------------------------------------------------------------------

`corevital.payload` (header, always first):
    corevital.payload.version        int      PAYLOAD_VERSION
    corevital.payload.sequences      int      N, returned sequences (axis 0 of every step array)
    corevital.payload.steps          int      S, generated steps
    corevital.payload.layers         int      L, decoder layers
    corevital.payload.heads          int      attention heads per layer
    corevital.payload.prompt_rows    int      R, unique prompt rows with prompt telemetry
    corevital.payload.model_type     string   `config.model_type`
    corevital.payload.sections       string[] sections present, in priority order
    corevital.payload.truncated      string[] what the budget dropped or reduced
    corevital.payload.attention_unavailable_reason  string, only when set

`corevital.payload.<section>`, one event per array:
    corevital.payload.section        string   steps | analysis | layers | attention |
                                              cross_attention | repetition | prompt |
                                              prompt_attention
    corevital.payload.array          string   array name inside the section
    corevital.payload.dtype          string   float16 | float32 | uint8 | uint16 | uint32 |
                                              int32 | int64 (little-endian), or json
    corevital.payload.shape          int[]    C order
    corevital.payload.fields         string[] names along the last axis, when it holds stats
    corevital.payload.data           string[] base64 (RFC 4648, padded) of the raw
                                              little-endian bytes, split in chunks of at most
                                              CHUNK_CHARS characters (a multiple of 4, so every
                                              chunk decodes on its own); join, then decode
    corevital.payload.cap            int      prompt_attention only: per-head entry cap

Sections, in priority order (a lower one is kept only when every kept higher one fits):

    steps             logits [N,S,5] (entropy, margin, topk_mass, max_prob, surprisal),
                      logit_counts [N,S,2] (nan_count, inf_count), token_ids [N,S]
                      with content capture, else token_pattern [N,S], valid [N,S] (uint8 0/1)
    analysis          json: per-sequence analysis results and the aggregate
    layers            hidden_moments [N,S,L,2] (mean, std), hidden_norms [N,S,L,2]
                      (l2_norm, max_abs; always float32), hidden_counts [N,S,L,2]
    attention         attention [N,S,L,7] (ATTENTION_STATS)
    cross_attention   cross_attention [N,S,L,7] (seq2seq decoders)
    repetition        repetition_cosine [N,S,R] (float32: the loop threshold is 0.9995)
    prompt            surprisal [R,P-1], layer_transformation [R,L], basin [R,L,H]
    prompt_attention  counts [R,L,H] (kept entries per head), query [E], key [E],
                      weight [E] (float16): entries above 0.01, head by head in C order of
                      counts, each head's strongest first

Float arrays use float16 when every finite value fits its range (otherwise float32, so
nothing overflows to inf); counts use the narrowest unsigned integer that holds them (float16
or float32 when some are NaN, i.e. not observed); token ids and positions the narrowest
integer type.

Budget: sizes are exact OTLP protobuf sizes of the events inside a Span message (what
`corevital.payload.bytes` reports). Sections are admitted in priority order; one that does
not fit in what is left is dropped whole and recorded in `truncated`; the sparse prompt
attention (last) first has its per-head cap reduced until it fits (recorded as
`prompt_attention:cap=<C>`), and is dropped only when even one entry per head does not fit.
At most 19 events, whatever N, S, L or R, with at most 10 attributes each.

Modules: `format` (names, sections, dtypes, array codec), `encode` (sections under the budget),
`otlp_size` (exact protobuf sizes), `decode` (events back to arrays).
"""

from .decode import DecodedPayload, decode_payload, is_payload_event
from .encode import payload_events, token_pattern
from .format import (
    ARRAY,
    CAP,
    CHUNK_CHARS,
    COUNT_FIELDS,
    DATA,
    DEFAULT_MAX_BYTES,
    DTYPE,
    DTYPES,
    EVENT_PREFIX,
    FIELDS,
    HEADER_EVENT,
    HEADS,
    HIDDEN_MOMENT_FIELDS,
    HIDDEN_NORM_FIELDS,
    LAYERS,
    LOGIT_FLOAT_FIELDS,
    MAX_EVENTS,
    MODEL_TYPE,
    PAYLOAD_BYTES,
    PAYLOAD_TRUNCATED,
    PAYLOAD_VERSION,
    PAYLOAD_VERSION_ATTRIBUTE,
    PROMPT_ROWS,
    SECTION,
    SECTIONS,
    SECTIONS_PRESENT,
    SEQUENCES,
    SHAPE,
    STEPS,
    TOKEN_IDS,
    TOKEN_PATTERN,
    TRUNCATED,
    UNAVAILABLE_REASON,
    VERSION,
    PayloadError,
    decode_array,
    encode_array,
)
from .otlp_size import event_size
