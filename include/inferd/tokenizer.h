/* Vocabulary and tokenizers read from GGUF metadata, and detokenization.
 *
 * Two tokenizer models, with token ids matching llama.cpp's (c392e5094)
 * exactly, including its special-token handling:
 *   - SentencePiece-style BPE (`tokenizer.ggml.model = "llama"`: Llama 2,
 *     Mistral, TinyLlama, Phi-3, the stories models), with byte fallback;
 *   - byte-level BPE (`"gpt2"`: GPT-2, Llama 3, Qwen2, ...): the text is cut
 *     into words by the pre-tokenizer `tokenizer.ggml.pre` names (PCRE2
 *     split patterns, one chain per name; see docs/tokenizer.md), each
 *     word's bytes are written in GPT-2's byte alphabet and merged by the
 *     rank of `tokenizer.ggml.merges`.
 * A loaded vocabulary is immutable: every function below may be called from
 * any thread on a shared vocabulary.
 *
 * Metadata read by inferd_vocab_load (GGUF keys):
 *   tokenizer.ggml.model            string   "llama" (SPM) or "gpt2" (BPE)
 *   tokenizer.ggml.pre              string   BPE: the pre-tokenizer, one of
 *                                            the names llama.cpp c392e5094
 *                                            knows ("gpt-2", "llama-bpe",
 *                                            "qwen2", ...; docs/tokenizer.md);
 *                                            missing: "default", as
 *                                            llama.cpp (which warns that
 *                                            tokens may be wrong). Ignored
 *                                            for SPM
 *   tokenizer.ggml.tokens           [string] token texts; SPM: U+2581 stands
 *                                            for a space, byte tokens
 *                                            "<0xHH>"; BPE: texts in GPT-2's
 *                                            byte alphabet ("\xC4\xA0" = U+0120
 *                                            for a space)
 *   tokenizer.ggml.merges           [string] BPE only, required: "left right"
 *                                            (split at the first space after
 *                                            the first byte); rank = index;
 *                                            the texts need not be tokens
 *   tokenizer.ggml.scores           [f32]    merge priority (optional; i32
 *                                            accepted), same length as tokens
 *   tokenizer.ggml.token_type       [i32]    optional, same length as tokens:
 *                                            1 normal, 2 unknown, 3 control,
 *                                            4 user-defined, 5 unused, 6 byte
 *                                            (0 undefined)
 *   tokenizer.ggml.bos_token_id     u32      default 1 (SPM), 11 (BPE, as
 *                                            llama.cpp; none for chatglm-bpe)
 *   tokenizer.ggml.eos_token_id     u32      default 2 (SPM), 11 (BPE)
 *   tokenizer.ggml.unknown_token_id u32      default 0 (SPM), none (BPE)
 *   tokenizer.ggml.padding_token_id, eot_token_id, eom_token_id,
 *   fim_{pre,suf,mid,pad,rep,sep}_token_id   optional
 *   tokenizer.ggml.add_bos_token    bool     default true (SPM); BPE: true
 *                                            for the llama3 family, tekken
 *                                            and chameleon, else false
 *   tokenizer.ggml.add_eos_token    bool     default false
 *   tokenizer.ggml.add_space_prefix bool     default true (SPM), false (BPE;
 *                                            BPE never adds a space, but
 *                                            when the key says true,
 *                                            detokenize drops one leading
 *                                            space, as llama.cpp)
 *   general.name                    string   only to apply llama.cpp's Phi-3
 *                                            special-token whitespace rule
 * A special id of -1 (or 0xFFFFFFFF) means "not set" and keeps the default.
 */
#ifndef INFERD_TOKENIZER_H
#define INFERD_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inferd/error.h"
#include "inferd/gguf.h"

/** Token id meaning "none" (no such special token). */
#define INFERD_TOKEN_NONE (-1)

/** Longest text inferd_tokenize accepts, in bytes (far beyond any context
 * window). Its scratch memory is about 70 bytes per input character for
 * SPM, at most about 100 bytes per input byte; about 75 bytes per input
 * byte for BPE, at most about 210 (a word of bytes that are not UTF-8, each
 * of which becomes U+FFFD, 3 bytes). */
#define INFERD_TOKENIZE_MAX_BYTES ((size_t)4 << 20)

/** Token types as stored in `tokenizer.ggml.token_type`. */
typedef enum inferd_token_type {
    INFERD_TOKEN_UNDEFINED = 0,
    INFERD_TOKEN_NORMAL = 1,
    INFERD_TOKEN_UNKNOWN = 2,
    INFERD_TOKEN_CONTROL = 3,
    INFERD_TOKEN_USER_DEFINED = 4,
    INFERD_TOKEN_UNUSED = 5,
    INFERD_TOKEN_BYTE = 6,
} inferd_token_type;

/** Tokenizer models (`tokenizer.ggml.model`). */
typedef enum inferd_vocab_kind {
    INFERD_VOCAB_SPM = 1, /* "llama" */
    INFERD_VOCAB_BPE = 2, /* "gpt2": byte-level BPE */
} inferd_vocab_kind;

typedef struct inferd_vocab inferd_vocab;

/**
 * Load the vocabulary described by @p g's `tokenizer.*` metadata.
 *
 * Everything needed is copied: @p g may be closed right after. Every key is
 * validated: array types and lengths (scores and token_type must have as
 * many entries as tokens), token texts (valid UTF-8, at most 64 KiB, no
 * duplicates; an empty text becomes "[EMPTY_<id>]" as in llama.cpp), SPM
 * byte tokens spelled "<0xHH>", token types 0..6, finite scores, special
 * ids in range, add_bos/add_eos only with a BOS/EOS token, and BPE merges
 * (each valid UTF-8 and two non-empty texts around a space; llama.cpp
 * ignores entries without a space, here they are an error). A BPE
 * vocabulary compiles its pre-tokenizer's split patterns here, once.
 *
 * @param g  borrowed GGUF handle.
 * @return 0 and *out_vocab; INFERD_E_NOT_FOUND (no tokenizer.ggml.model, or
 * it is "none"/"no_vocab": the file has no tokenizer), INFERD_E_UNSUPPORTED
 * (another tokenizer model, or a tokenizer.ggml.pre llama.cpp c392e5094
 * does not know: the message names it and the supported ones),
 * INFERD_E_FORMAT (malformed metadata: the message names the key and, for
 * arrays, the index), INFERD_E_NOMEM. Thread: any. Lifetime: until
 * inferd_vocab_destroy.
 */
int inferd_vocab_load(const inferd_gguf *g, inferd_vocab **out_vocab, inferd_error *err);

/** Free a vocabulary. Accepts NULL. */
void inferd_vocab_destroy(inferd_vocab *v);

/** The tokenizer model. */
inferd_vocab_kind inferd_vocab_get_kind(const inferd_vocab *v);
/** BPE: the pre-tokenizer's name ("default" when the file names none);
 * NULL for SPM. Lifetime: static. */
const char *inferd_vocab_pre(const inferd_vocab *v);
/** Number of tokens (ids are 0 .. n-1). */
int32_t inferd_vocab_n_tokens(const inferd_vocab *v);
/** Special token ids, or INFERD_TOKEN_NONE. */
int32_t inferd_vocab_bos(const inferd_vocab *v);
int32_t inferd_vocab_eos(const inferd_vocab *v);
int32_t inferd_vocab_eot(const inferd_vocab *v); /* given, or found by text */
int32_t inferd_vocab_unk(const inferd_vocab *v);
int32_t inferd_vocab_pad(const inferd_vocab *v);
/** Whether tokenizing with add_special adds BOS at the start / EOS at the
 * end, and whether a space is put before text at the start of the input
 * and after a special token (SentencePiece's "add dummy prefix"; a BPE
 * vocabulary never puts one, see tokenizer.ggml.add_space_prefix above). */
bool inferd_vocab_add_bos(const inferd_vocab *v);
bool inferd_vocab_add_eos(const inferd_vocab *v);
bool inferd_vocab_add_space_prefix(const inferd_vocab *v);

/**
 * Whether @p id ends generation, decided as llama.cpp c392e5094 does: EOS,
 * EOT, EOM, the FIM pad/repo/file-separator tokens, and tokens whose text
 * is "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
 * "<|endoftext|>", "<|eom_id|>" or "<EOT>" (Qwen2: <|endoftext|> and
 * <|im_end|>). EOT, EOM and FIM tokens the metadata does not name are found
 * by their text too (docs/tokenizer.md). False for ids out of range.
 */
bool inferd_vocab_is_eog(const inferd_vocab *v, int32_t id);
/** Whether @p id is a control token (typed so, or made so because it is an
 * end or FIM marker). Control tokens have no text unless rendered with
 * special = true. False for ids out of range. */
bool inferd_vocab_is_control(const inferd_vocab *v, int32_t id);
/** The type read from tokenizer.ggml.token_type (NORMAL when absent);
 * INFERD_TOKEN_UNDEFINED for ids out of range. */
inferd_token_type inferd_vocab_token_type(const inferd_vocab *v, int32_t id);
/** Score of @p id (0 when out of range). */
float inferd_vocab_token_score(const inferd_vocab *v, int32_t id);
/** Raw text of @p id as stored in the vocabulary (U+2581 for spaces,
 * "<0x0A>" for byte tokens), NUL-terminated; *out_len (may be NULL) gets its
 * length. NULL for ids out of range. Lifetime: the vocabulary's. */
const char *inferd_vocab_token_text(const inferd_vocab *v, int32_t id, size_t *out_len);
/** Id of the token whose raw text is exactly @p text (@p len bytes), or
 * INFERD_TOKEN_NONE. */
int32_t inferd_vocab_find(const inferd_vocab *v, const char *text, size_t len);
/** Longest piece inferd_token_to_piece can return, in bytes. */
size_t inferd_vocab_max_piece_len(const inferd_vocab *v);

/**
 * Tokenize @p len bytes of @p text (need not be NUL-terminated, need not be
 * valid UTF-8). SPM: bytes that form no token go out as byte tokens
 * "<0xHH>", or as the unknown token when the vocabulary has no byte tokens.
 * BPE, as llama.cpp: a byte that starts no UTF-8 sequence is read as U+FFFD
 * (an overlong form as the code point it spells); a merged piece that is no
 * token goes out as the tokens of its single bytes that are tokens, and the
 * rest of it is dropped.
 *
 * @param add_special    add BOS (and EOS) as the vocabulary says.
 * @param parse_special  match the text of control and unknown tokens (e.g.
 *                       "<s>") as those tokens. User-defined tokens are
 *                       always matched, as in llama.cpp.
 * @param out_ids        receives the first min(needed, cap) ids.
 * @param out_n          receives the number of ids the text needs, also
 *                       when INFERD_E_RANGE is returned.
 * @return 0; INFERD_E_RANGE (cap too small: call again with *out_n);
 * INFERD_E_INVALID (NULL arguments, text longer than
 * INFERD_TOKENIZE_MAX_BYTES, or a byte with neither a byte token nor an
 * unknown token); INFERD_E_NOMEM. Thread: any. Allocates scratch memory
 * proportional to @p len for the call.
 */
int inferd_tokenize(const inferd_vocab *v, const char *text, size_t len, bool add_special,
                    bool parse_special, int32_t *out_ids, size_t cap, size_t *out_n,
                    inferd_error *err);

/**
 * Split @p len bytes of valid UTF-8 @p text into the words the BPE
 * pre-tokenizer named @p pre (a tokenizer.ggml.pre value) makes, before any
 * merging: for tests and tools (it compiles the patterns on every call).
 *
 * @param out_ends  receives the end offset (bytes) of each of the first
 *                  min(needed, cap) words, in order; the words cover the
 *                  text.
 * @param out_n     receives the number of words, also with INFERD_E_RANGE.
 * @return 0; INFERD_E_RANGE (cap too small); INFERD_E_UNSUPPORTED (unknown
 * @p pre); INFERD_E_INVALID (NULL arguments, text not valid UTF-8 or longer
 * than INFERD_TOKENIZE_MAX_BYTES); INFERD_E_NOMEM. Thread: any.
 */
int inferd_pretokenize(const char *pre, const char *text, size_t len, size_t *out_ends, size_t cap,
                       size_t *out_n, inferd_error *err);

/**
 * The bytes token @p id stands for. SPM: U+2581 becomes a space, a byte
 * token becomes its byte. BPE: each character of the byte alphabet becomes
 * its byte (a character outside it renders as llama.cpp's
 * "[UNK_BYTE_0x<hex><text>]"), byte-typed tokens give nothing. Both:
 * control and unknown tokens give nothing unless @p special is true (then
 * their raw text); user-defined tokens give their raw text; unused and
 * undefined tokens give nothing. Not NUL-terminated.
 *
 * @return the number of bytes written to @p buf; -(needed) if @p cap is too
 * small (nothing written); 0 for ids out of range. Thread: any.
 */
int32_t inferd_token_to_piece(const inferd_vocab *v, int32_t id, bool special, char *buf,
                              size_t cap);

/**
 * Concatenate the pieces of @p n_ids tokens, as llama.cpp's detokenize: when
 * the vocabulary adds a space prefix, one leading space of the first piece
 * is dropped, so detokenize(tokenize(s)) == s; with @p remove_special, a
 * leading BOS (then the space is kept) and a trailing EOS are skipped when
 * the vocabulary adds them. The bytes are exactly the pieces' (a broken
 * UTF-8 sequence stays broken; see inferd_detok for streaming). Unlike
 * llama_detokenize, the "clean up tokenization spaces" pass some BPE
 * vocabularies ask for (" ," -> ",", " 's" -> "'s", ...) is not applied:
 * the text is what the tokens say, as llama.cpp's server streams it.
 *
 * @param unparse_special  render control tokens' text (see token_to_piece).
 * @param out              receives the text, not NUL-terminated.
 * @param out_len          receives the length needed, also with
 *                         INFERD_E_RANGE.
 * @return 0; INFERD_E_RANGE (cap too small; out holds a prefix);
 * INFERD_E_INVALID (an id out of range: the message names its index).
 * Thread: any.
 */
int inferd_detokenize(const inferd_vocab *v, const int32_t *ids, size_t n_ids, bool remove_special,
                      bool unparse_special, char *out, size_t cap, size_t *out_len,
                      inferd_error *err);

/**
 * Streaming detokenizer: turns one token at a time into text that is always
 * valid UTF-8. Bytes of a character split across tokens (SPM byte tokens,
 * BPE tokens ending inside a character) are held back until the character
 * is complete; a sequence that cannot
 * complete, and any byte that cannot start one, becomes U+FFFD (one per
 * broken sequence). No space is stripped: pieces are emitted as they are.
 * Caller's storage; no allocation. Thread: one at a time per detokenizer.
 */
typedef struct inferd_detok {
    const inferd_vocab *vocab; /* borrowed; must outlive the detokenizer */
    bool special;              /* render control tokens' text; init: false */
    unsigned char pending[4];  /* held-back prefix of one UTF-8 character */
    size_t n_pending;          /* 0..3 */
} inferd_detok;

/** Returned by inferd_detok_push/flush when nothing could be done. */
#define INFERD_DETOK_ERROR ((size_t)-1)

/** Start a detokenizer over @p v (special = false, nothing pending). */
void inferd_detok_init(inferd_detok *d, const inferd_vocab *v);
/**
 * Feed token @p id; write the text that is now complete to @p out.
 * A @p cap of at least inferd_token_to_piece's length for @p id plus 8
 * (so inferd_vocab_max_piece_len(v) + 8 for any token) is always enough.
 * @return bytes written (not NUL-terminated); INFERD_DETOK_ERROR if @p id is
 * out of range or @p cap is smaller than needed, and then nothing was
 * written or consumed.
 */
size_t inferd_detok_push(inferd_detok *d, int32_t id, char *out, size_t cap);
/**
 * End of the stream: a held-back incomplete character becomes U+FFFD
 * (3 bytes; cap >= 3 is enough). The detokenizer is then empty and may go on.
 * @return bytes written; INFERD_DETOK_ERROR if @p cap is too small.
 */
size_t inferd_detok_flush(inferd_detok *d, char *out, size_t cap);

#endif
