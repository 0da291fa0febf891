/* Pre-tokenizers of byte-level BPE vocabularies (private to the engine).
 *
 * A pre-tokenizer cuts text into the pieces ("words") that BPE then merges
 * within, by a chain of split patterns named by `tokenizer.ggml.pre`. Each
 * pattern of the chain is run over every piece the previous ones made; the
 * text between two matches is a piece too. The patterns are llama.cpp's
 * (c392e5094), rewritten for PCRE2 (UTF, UCP) so that they split exactly as
 * llama.cpp does:
 *   - \s is spelled out as the Unicode White_Space set, which is what
 *     llama.cpp matches (PCRE2's own \s adds U+180E);
 *   - `$` is \z (the end of the piece only);
 *   - where llama.cpp matches a pattern on text whose non-ASCII characters
 *     are collapsed to one byte per category, its view of ASCII is kept
 *     (its \p{S} does not contain '~'), and where it matches on text whose
 *     non-ASCII whitespace became U+000B, classes listing ranges leave that
 *     whitespace out;
 *   - groups repeated per character are written as single classes
 *     (`((?=\p{L})[^a-z])*` is `[^\P{L}a-z]*`), so that matching needs no
 *     memory per character.
 * llama.cpp first decodes the text to code points, replacing each byte that
 * starts no sequence with U+FFFD; inferd__pretok_normalize does the same.
 *
 * Invariants: a compiled pre-tokenizer is immutable; its patterns are
 * compiled once. Threads: any, on a shared pre-tokenizer (each split call
 * makes its own match data).
 */
#ifndef INFERD_ENGINE_PRETOK_H
#define INFERD_ENGINE_PRETOK_H

#include <stdbool.h>
#include <stddef.h>

#include "inferd/error.h"

/* What a `tokenizer.ggml.pre` name sets besides its patterns (llama.cpp's
 * per-name settings). */
typedef struct inferd__pretok_info {
    const char *name;   /* the tokenizer.ggml.pre value */
    int kind;           /* which pattern chain (private to pretok.c) */
    bool ignore_merges; /* a word that is a token is taken whole */
    bool add_bos;       /* add_bos_token defaults to true (else false) */
    bool no_bos;        /* there is no default BOS id */
    bool clean_spaces;  /* llama.cpp's clean_up_tokenization_spaces */
    bool mask_lstrip;   /* "<mask>" eats the whitespace before it */
} inferd__pretok_info;

typedef struct inferd__pretok inferd__pretok;

/* Called for each piece in order: @p off and @p len are bytes of the
 * subject given to inferd__pretok_split. A negative return stops the split
 * and is returned from it. */
typedef int (*inferd__pretok_piece_fn)(void *ctx, size_t off, size_t len);

/* The settings of the pre-tokenizer named @p name (@p len bytes), or NULL
 * when it is not one llama.cpp c392e5094 knows. */
const inferd__pretok_info *inferd__pretok_find(const char *name, size_t len);

/* The @p i-th supported name (NULL past the last), in llama.cpp's order. */
const char *inferd__pretok_name(size_t i);

/* Compile the patterns of @p info. Allocations go through inferd_malloc.
 * @return 0; INFERD_E_NOMEM; INFERD_E_INTERNAL (a pattern does not
 * compile: a bug). */
int inferd__pretok_create(const inferd__pretok_info *info, inferd__pretok **out_p,
                          inferd_error *err);
void inferd__pretok_destroy(inferd__pretok *p);

/* Decode @p len bytes as llama.cpp does (a byte that starts no complete
 * sequence becomes U+FFFD, which takes 3 bytes; overlong forms decode to
 * the code point they spell; a sequence above U+10FFFF counts as a bad
 * byte) and write it back as UTF-8 twice: @p real holds the code points
 * (surrogates included, as 3 bytes), @p subject the same with each
 * surrogate replaced by U+E000, which belongs to the same class for every
 * pattern and keeps the subject valid UTF-8 for PCRE2. Offsets in both are
 * the same. Each output needs room for 3 * @p len bytes.
 * @return the bytes written to each. */
size_t inferd__pretok_normalize(const char *in, size_t len, char *real, char *subject);

/* Cut @p len bytes of a normalized @p subject into pieces, calling @p fn for
 * each in order. @return 0; what @p fn returned if negative; INFERD_E_NOMEM;
 * INFERD_E_INTERNAL (a PCRE2 match limit was reached). */
int inferd__pretok_split(const inferd__pretok *p, const char *subject, size_t len,
                         inferd__pretok_piece_fn fn, void *ctx, inferd_error *err);

#endif
