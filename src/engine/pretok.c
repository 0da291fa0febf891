/* Pre-tokenizers of byte-level BPE vocabularies: the split-pattern chains
 * llama.cpp (c392e5094) uses for each `tokenizer.ggml.pre` name, matched
 * with PCRE2 (UTF, UCP), and llama.cpp's decoding of raw bytes to code
 * points. See pretok.h for how the patterns were adapted.
 * Invariants: compiled patterns are immutable after create. Threads: any;
 * a split allocates its own match data.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "pretok.h"

#include <pcre2.h>
#include <string.h>

#include "inferd/alloc.h"

/* ------------------------------------------------------------------------ */
/* Patterns                                                                  */
/* ------------------------------------------------------------------------ */

/* The Unicode White_Space set as the body of a class: what llama.cpp counts
 * as whitespace (its \s). */
#define WS                                                                       \
    "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}" \
    "\\x{202F}\\x{205F}\\x{3000}"
#define SPACE "[" WS "]"
#define NOT_SPACE "[^" WS "]"

/* GPT-2's pattern: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+|
 * ?[^\s\p{L}\p{N}]+|\s+(?!\S). */
#define P_GPT2                                                                                     \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+|" SPACE "+(?!" NOT_SPACE \
    ")"

/* Llama 3's pattern with its case-insensitive contractions spelled out;
 * Qwen2's is the same with single digits. */
#define P_CONTRACTIONS "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
#define P_LLAMA3_TAIL \
    "| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*|" SPACE "*[\\r\\n]+|" SPACE "+(?!" NOT_SPACE ")|" SPACE "+"
#define P_LLAMA3 P_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}" P_LLAMA3_TAIL
#define P_QWEN2 P_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}" P_LLAMA3_TAIL

/* CJK ideographs and everything from U+0800 to U+4E00 (and Hangul), as
 * DeepSeek lists them; the whitespace in that span is left out because
 * llama.cpp matches this pattern on text whose non-ASCII whitespace was
 * turned into U+000B. */
#define CJK_SPAN                                                                   \
    "[\\x{4E00}-\\x{9FA5}\\x{800}-\\x{167F}\\x{1681}-\\x{1FFF}\\x{200B}-\\x{2027}" \
    "\\x{202A}-\\x{202E}\\x{2030}-\\x{205E}\\x{2060}-\\x{2FFF}\\x{3001}-\\x{4E00}" \
    "\\x{AC00}-\\x{D7FF}]+"

/* DeepSeek LLM's letters (cased scripts). */
#define DEEPSEEK_LETTERS                                                             \
    "[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}"  \
    "\\x{1C4}-\\x{293}\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}"            \
    "\\x{37B}-\\x{37D}\\x{37F}\\x{386}\\x{388}-\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}"    \
    "\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}"           \
    "\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}"   \
    "\\x{1CBD}-\\x{1CBF}\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}"   \
    "\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}"   \
    "\\x{1F50}-\\x{1F57}\\x{1F59}\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}"              \
    "\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}\\x{1FC2}-\\x{1FC4}"             \
    "\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}"   \
    "\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}\\x{210A}-\\x{2113}"    \
    "\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}\\x{212A}-\\x{212D}"     \
    "\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}\\x{214E}"    \
    "\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}"    \
    "\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}"    \
    "\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}"   \
    "\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}" \
    "\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}"                \
    "\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}\\x{1E900}-\\x{1E943}]"

/* BLOOM's pattern: a word is anything up to whitespace or one of
 * ( | . , ! ? ) and the ellipsis, ideographic full stop and comma,
 * fullwidth comma, Devanagari danda, Urdu full stop and Arabic comma. */
#define P_BLOOM " ?[^(" WS "|.,!?\\x{2026}\\x{3002}\\x{FF0C}\\x{3001}\\x{964}\\x{6D4}\\x{60C})]+"

/* The pattern chains. MAX_PATTERNS is the longest. */
enum {
    KIND_DEFAULT,
    KIND_LLAMA3,
    KIND_DEEPSEEK_LLM,
    KIND_DEEPSEEK_CODER,
    KIND_DEEPSEEK3,
    KIND_FALCON,
    KIND_STARCODER,
    KIND_GPT2,
    KIND_QWEN2,
    KIND_BLOOM,
    KIND_VIKING,
    KIND_TEKKEN,
    KIND_CHAMELEON,
    KIND_COUNT
};
#define MAX_PATTERNS 6

static const char *const CHAINS[KIND_COUNT][MAX_PATTERNS + 1] =
    {
        [KIND_DEFAULT] = {"[\\p{P}\\$\\+<=>\\^~\\|]+", P_GPT2, "\\p{N}+", "[0-9][0-9][0-9]", NULL},
        [KIND_LLAMA3] = {P_LLAMA3, NULL},
        [KIND_DEEPSEEK_LLM] =
            {
                "[\\r\\n]",
                SPACE "?" DEEPSEEK_LETTERS "+",
                /* U+3000, in DeepSeek's list, is whitespace: see CJK_SPAN. */
                SPACE "?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}"
                      "\\x{3001}-\\x{3002}]+",
                /* \s+$: trailing whitespace. Only the start of a whitespace run
             * can begin it; the lookbehind says so, which keeps a long run
             * followed by other text from being scanned once per position. */
                "(?<!" SPACE ")" SPACE "+\\z",
                CJK_SPAN,
                "\\p{N}+",
                NULL,
            },
        [KIND_DEEPSEEK_CODER] = {"[\\r\\n]", SPACE "?\\p{L}+", SPACE "?\\p{P}+", CJK_SPAN, "\\p{N}",
                                 NULL},
        [KIND_DEEPSEEK3] =
            {
                "\\p{N}{1,3}",
                "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+",
                /* llama.cpp's \p{S} leaves out ASCII '~' here: so '~' may start a
             * word, and [\p{P}\p{S}] is written as its complement without
             * '~' (every code point is in exactly one of L M N P S Z C). */
                "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+"
                "|(?:~|[^\\r\\n\\p{L}\\p{P}\\p{S}])?[\\p{L}\\p{M}]+"
                "| ?[^\\p{L}\\p{M}\\p{N}\\p{Z}\\p{C}~]+[\\r\\n]*"
                "|" SPACE "*[\\r\\n]+|" SPACE "+(?!" NOT_SPACE ")|" SPACE "+",
                NULL,
            },
        [KIND_FALCON] = {"[\\p{P}\\$\\+<=>\\^~\\|`]+", P_GPT2, "[0-9][0-9][0-9]", NULL},
        [KIND_STARCODER] = {"\\p{N}", P_GPT2, NULL},
        [KIND_GPT2] = {P_GPT2, NULL},
        [KIND_QWEN2] = {P_QWEN2, NULL},
        [KIND_BLOOM] = {P_BLOOM, NULL},
        [KIND_VIKING] = {P_BLOOM, "\\p{N}", NULL},
        [KIND_TEKKEN] =
            {
                /* Upper-then-lower and lower-only words: ((?=\p{L})[^a-z]) is a
             * letter that is not a-z, [^\P{L}a-z]. */
                "[^\\r\\n\\p{L}\\p{N}]?[^\\P{L}a-z]*[^\\P{L}A-Z]+"
                "|[^\\r\\n\\p{L}\\p{N}]?[^\\P{L}a-z]+[^\\P{L}A-Z]*"
                "|\\p{N}| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n/]*|" SPACE "*[\\r\\n]+|" SPACE
                "+(?!" NOT_SPACE ")|" SPACE "+",
                NULL,
            },
        [KIND_CHAMELEON] =
            {
                "<sentinel:[0-9]+>", /* sentinel tokens */
                "IMGIMG[A-I]{1,4}Z", /* image tokens */
                "[\\t\\n]|    |  ",
                "\\p{N}",                 /* single digits */
                "[\\p{P}!-/:-@\\[-`{-~]", /* punctuation, one at a time */
                P_GPT2,
                NULL,
            },
};

/* Every name llama.cpp c392e5094 accepts, in its order, with its settings.
 * clean_spaces is true for BPE unless the name turns it off. */
#define PRE(n, k, im, bos, nobos, clean, mask) \
    {                                          \
        n, k, im, bos, nobos, clean, mask      \
    }
static const inferd__pretok_info PRE_NAMES[] = {
    PRE("default", KIND_DEFAULT, false, false, false, true, false),
    PRE("llama3", KIND_LLAMA3, true, true, false, true, false),
    PRE("llama-v3", KIND_LLAMA3, true, true, false, true, false),
    PRE("llama-bpe", KIND_LLAMA3, true, true, false, true, false),
    PRE("falcon3", KIND_LLAMA3, true, true, false, true, false),
    PRE("deepseek-llm", KIND_DEEPSEEK_LLM, false, false, false, false, false),
    PRE("deepseek-coder", KIND_DEEPSEEK_CODER, false, false, false, false, false),
    PRE("deepseek-v3", KIND_DEEPSEEK3, false, false, false, false, false),
    PRE("falcon", KIND_FALCON, false, false, false, true, false),
    PRE("mpt", KIND_GPT2, false, false, false, true, false),
    PRE("starcoder", KIND_STARCODER, false, false, false, true, false),
    PRE("gpt-2", KIND_GPT2, false, false, false, true, false),
    PRE("phi-2", KIND_GPT2, false, false, false, true, false),
    PRE("jina-es", KIND_GPT2, false, false, false, true, false),
    PRE("jina-de", KIND_GPT2, false, false, false, true, false),
    PRE("gigachat", KIND_GPT2, false, false, false, true, false),
    PRE("jina-v1-en", KIND_GPT2, false, false, false, true, false),
    PRE("jina-v2-es", KIND_GPT2, false, false, false, true, true),
    PRE("jina-v2-de", KIND_GPT2, false, false, false, true, true),
    PRE("jina-v2-code", KIND_GPT2, false, false, false, true, true),
    PRE("roberta-bpe", KIND_GPT2, false, false, false, true, false),
    PRE("refact", KIND_STARCODER, false, false, false, true, false),
    PRE("command-r", KIND_STARCODER, false, false, false, false, false),
    PRE("qwen2", KIND_QWEN2, false, false, false, false, false),
    PRE("deepseek-r1-qwen", KIND_QWEN2, false, false, false, false, false),
    PRE("stablelm2", KIND_QWEN2, false, false, false, true, false),
    PRE("olmo", KIND_GPT2, false, false, false, true, false),
    PRE("dbrx", KIND_LLAMA3, false, false, false, true, false),
    PRE("smaug-bpe", KIND_LLAMA3, false, false, false, true, false),
    PRE("poro-chat", KIND_BLOOM, false, false, false, false, false),
    PRE("chatglm-bpe", KIND_LLAMA3, false, false, true, true, false),
    PRE("viking", KIND_VIKING, false, false, false, false, false),
    PRE("jais", KIND_GPT2, false, false, false, true, false),
    PRE("tekken", KIND_TEKKEN, true, true, false, false, false),
    PRE("smollm", KIND_STARCODER, false, false, false, false, false),
    PRE("codeshell", KIND_STARCODER, false, false, false, true, false),
    PRE("bloom", KIND_BLOOM, false, false, false, true, false),
    PRE("gpt3-finnish", KIND_BLOOM, false, false, false, true, false),
    PRE("exaone", KIND_STARCODER, false, false, false, true, false),
    PRE("chameleon", KIND_CHAMELEON, false, true, false, false, false),
    PRE("minerva-7b", KIND_STARCODER, false, false, false, true, false),
    PRE("megrez", KIND_QWEN2, false, false, false, true, false),
};
#undef PRE

#define N_PRE_NAMES (sizeof(PRE_NAMES) / sizeof(PRE_NAMES[0]))

const inferd__pretok_info *inferd__pretok_find(const char *name, size_t len)
{
    for (size_t i = 0; i < N_PRE_NAMES; i++)
        if (strlen(PRE_NAMES[i].name) == len && memcmp(PRE_NAMES[i].name, name, len) == 0)
            return &PRE_NAMES[i];
    return NULL;
}

const char *inferd__pretok_name(size_t i) { return i < N_PRE_NAMES ? PRE_NAMES[i].name : NULL; }

/* ------------------------------------------------------------------------ */
/* Compiling                                                                 */
/* ------------------------------------------------------------------------ */

struct inferd__pretok {
    const inferd__pretok_info *info;
    pcre2_general_context *gctx; /* routes PCRE2's allocations to inferd_malloc */
    size_t n_code;
    pcre2_code *code[MAX_PATTERNS];
};

static void *pcre_alloc(PCRE2_SIZE size, void *data)
{
    (void)data;
    return inferd_malloc(size);
}

static void pcre_free(void *p, void *data)
{
    (void)data;
    inferd_free(p);
}

int inferd__pretok_create(const inferd__pretok_info *info, inferd__pretok **out_p,
                          inferd_error *err)
{
    pcre2_compile_context *cctx = NULL;
    int rc = 0;
    inferd__pretok *p = inferd_calloc(1, sizeof(*p));

    if (!p)
        return inferd_fail(err, INFERD_E_NOMEM, "pre-tokenizer '%s': no memory", info->name);
    p->info = info;
    p->gctx = pcre2_general_context_create(pcre_alloc, pcre_free, NULL);
    if (p->gctx)
        cctx = pcre2_compile_context_create(p->gctx);
    if (!cctx) {
        rc = inferd_fail(err, INFERD_E_NOMEM, "pre-tokenizer '%s': no memory", info->name);
        goto fail;
    }
    for (const char *const *pat = CHAINS[info->kind]; *pat; pat++) {
        int code;
        PCRE2_SIZE at;
        pcre2_code *c = pcre2_compile((PCRE2_SPTR)*pat, PCRE2_ZERO_TERMINATED,
                                      PCRE2_UTF | PCRE2_UCP, &code, &at, cctx);
        if (!c) {
            if (code == PCRE2_ERROR_HEAP_FAILED) {
                rc = inferd_fail(err, INFERD_E_NOMEM,
                                 "pre-tokenizer '%s': no memory to compile its patterns",
                                 info->name);
            } else {
                PCRE2_UCHAR msg[120];
                pcre2_get_error_message(code, msg, sizeof(msg));
                rc = inferd_fail(err, INFERD_E_INTERNAL,
                                 "pre-tokenizer '%s': pattern %zu does not compile at %zu: %s",
                                 info->name, p->n_code, (size_t)at, (const char *)msg);
            }
            goto fail;
        }
        p->code[p->n_code++] = c;
    }
    pcre2_compile_context_free(cctx);
    *out_p = p;
    return 0;

fail:
    pcre2_compile_context_free(cctx);
    inferd__pretok_destroy(p);
    return rc;
}

void inferd__pretok_destroy(inferd__pretok *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n_code; i++)
        pcre2_code_free(p->code[i]);
    pcre2_general_context_free(p->gctx);
    inferd_free(p);
}

/* ------------------------------------------------------------------------ */
/* Decoding                                                                  */
/* ------------------------------------------------------------------------ */

static size_t put_utf8(char *out, uint32_t cp)
{
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

static bool is_cont(unsigned char c) { return (c & 0xC0) == 0x80; }

/* llama.cpp's decoder: the lead byte's high bits give the length, the
 * following bytes need only be continuation bytes (so overlong forms and
 * surrogates pass). Returns the code point and *n bytes, or U+FFFD and
 * *n = 1 for a byte that starts no complete sequence. */
static uint32_t decode_lax(const unsigned char *p, size_t avail, size_t *n)
{
    unsigned char c = p[0];
    uint32_t cp;

    *n = 1;
    if (c < 0x80)
        return c;
    if (c < 0xC0 || c >= 0xF8)
        return 0xFFFD;
    if (c < 0xE0) {
        if (avail < 2 || !is_cont(p[1]))
            return 0xFFFD;
        *n = 2;
        return ((uint32_t)(c & 0x1F) << 6) | (p[1] & 0x3F);
    }
    if (c < 0xF0) {
        if (avail < 3 || !is_cont(p[1]) || !is_cont(p[2]))
            return 0xFFFD;
        *n = 3;
        return ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
    }
    if (avail < 4 || !is_cont(p[1]) || !is_cont(p[2]) || !is_cont(p[3]))
        return 0xFFFD;
    cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(p[1] & 0x3F) << 12) |
         ((uint32_t)(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
    /* llama.cpp cannot write such a code point back and aborts; here the
     * lead byte is treated as one that starts no sequence. */
    if (cp > 0x10FFFF)
        return 0xFFFD;
    *n = 4;
    return cp;
}

/* Code points llama.cpp c392e5094 classifies by Unicode 15.1 but PCRE2
 * 10.42 (Unicode 14) does not know: the subject holds a stand-in that PCRE2
 * puts in the same category, of the same UTF-8 length, and inside or outside
 * every range a pattern lists exactly as the original (the three-byte ones
 * lie in DeepSeek's U+0800..U+4E00 span, and so do their stand-ins). With a
 * newer PCRE2 the stand-ins change nothing. */
static const struct {
    uint32_t first, last, stand_in;
} UNICODE15[] = {
    {0xCF3, 0xCF3, 0x900},       {0xECE, 0xECE, 0x900},    /* Mn */
    {0x2FFC, 0x2FFF, 0x2600},    {0x31EF, 0x31EF, 0x2600}, /* So */
    {0x10EFD, 0x10EFF, 0x101FD}, {0x1123F, 0x11240, 0x10000}, {0x11241, 0x11241, 0x101FD},
    {0x11B00, 0x11B09, 0x10100}, {0x11F00, 0x11F01, 0x101FD}, {0x11F02, 0x11F02, 0x10000},
    {0x11F03, 0x11F03, 0x101FD}, {0x11F04, 0x11F10, 0x10000}, {0x11F12, 0x11F33, 0x10000},
    {0x11F34, 0x11F3A, 0x101FD}, {0x11F3E, 0x11F42, 0x101FD}, {0x11F43, 0x11F4F, 0x10100},
    {0x11F50, 0x11F59, 0x10107}, {0x1342F, 0x1342F, 0x10000}, {0x13440, 0x13440, 0x101FD},
    {0x13441, 0x13446, 0x10000}, {0x13447, 0x13455, 0x101FD}, {0x1B132, 0x1B132, 0x10000},
    {0x1B155, 0x1B155, 0x10000}, {0x1D2C0, 0x1D2D3, 0x10107}, {0x1DF25, 0x1DF2A, 0x10000},
    {0x1E030, 0x1E06D, 0x10000}, {0x1E08F, 0x1E08F, 0x101FD}, {0x1E4D0, 0x1E4EB, 0x10000},
    {0x1E4EC, 0x1E4EF, 0x101FD}, {0x1E4F0, 0x1E4F9, 0x10107}, {0x1F6DC, 0x1F6DC, 0x1F600},
    {0x1F774, 0x1F776, 0x1F600}, {0x1F77B, 0x1F77F, 0x1F600}, {0x1F7D9, 0x1F7D9, 0x1F600},
    {0x1FA75, 0x1FA77, 0x1F600}, {0x1FA87, 0x1FA88, 0x1F600}, {0x1FAAD, 0x1FAAF, 0x1F600},
    {0x1FABB, 0x1FABD, 0x1F600}, {0x1FABF, 0x1FABF, 0x1F600}, {0x1FACE, 0x1FACF, 0x1F600},
    {0x1FADA, 0x1FADB, 0x1F600}, {0x1FAE8, 0x1FAE8, 0x1F600}, {0x1FAF7, 0x1FAF8, 0x1F600},
    {0x2B739, 0x2B739, 0x10000}, {0x2EBF0, 0x2EE5D, 0x10000}, {0x31350, 0x323AF, 0x10000},
};
/* Stand-ins: U+0900 Mn, U+2600 So, U+10000 Lo, U+10100 Po, U+10107 No,
 * U+101FD Mn, U+1F600 So. */

/* The code point PCRE2 is to see for @p cp. */
static uint32_t subject_cp(uint32_t cp)
{
    size_t lo = 0, hi = sizeof(UNICODE15) / sizeof(UNICODE15[0]);

    /* A surrogate (only an overlong-free lax decode makes one) is not
     * UTF-8 for PCRE2; U+E000 (private use) is "other" like it. */
    if (cp >= 0xD800 && cp <= 0xDFFF)
        return 0xE000;
    if (cp < UNICODE15[0].first)
        return cp;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < UNICODE15[mid].first)
            hi = mid;
        else if (cp > UNICODE15[mid].last)
            lo = mid + 1;
        else
            return UNICODE15[mid].stand_in;
    }
    return cp;
}

size_t inferd__pretok_normalize(const char *in, size_t len, char *real, char *subject)
{
    const unsigned char *p = (const unsigned char *)in;
    size_t i = 0, o = 0;

    while (i < len) {
        size_t n;
        uint32_t cp = decode_lax(p + i, len - i, &n);
        size_t w = put_utf8(real + o, cp);
        uint32_t scp = subject_cp(cp);
        if (scp == cp)
            memcpy(subject + o, real + o, w);
        else
            put_utf8(subject + o, scp); /* same length */
        o += w;
        i += n;
    }
    return o;
}

/* ------------------------------------------------------------------------ */
/* Splitting                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct split_ctx {
    const inferd__pretok *p;
    pcre2_match_data *md;
    const char *subject;
    inferd__pretok_piece_fn fn;
    void *fn_ctx;
    inferd_error *err;
} split_ctx;

/* Run pattern @p level over the piece [a, b), recursing into the next
 * pattern for every match and every stretch between matches, in order. The
 * piece is the whole subject of the match, as in llama.cpp: lookaheads and
 * \z stop at its end. */
static int split_level(split_ctx *sc, size_t level, size_t a, size_t b)
{
    const inferd__pretok *p = sc->p;
    PCRE2_SPTR s = (PCRE2_SPTR)(sc->subject + a);
    size_t n = b - a, start = 0, prev_end = 0;
    int rc;

    if (level == p->n_code)
        return sc->fn(sc->fn_ctx, a, n);
    while (start < n) {
        /* No pattern matches the empty string; NOTEMPTY only makes sure a
         * search always moves on. */
        int m = pcre2_match(p->code[level], s, n, start, PCRE2_NOTEMPTY | PCRE2_NO_UTF_CHECK,
                            sc->md, NULL);
        if (m == PCRE2_ERROR_NOMATCH)
            break;
        if (m == PCRE2_ERROR_NOMEMORY)
            return inferd_fail(sc->err, INFERD_E_NOMEM, "pre-tokenizer: no memory to match");
        if (m < 0) {
            PCRE2_UCHAR msg[120];
            pcre2_get_error_message(m, msg, sizeof(msg));
            return inferd_fail(sc->err, INFERD_E_INTERNAL,
                               "pre-tokenizer '%s': pattern %zu failed on a %zu-byte piece: %s",
                               p->info->name, level, n, (const char *)msg);
        }
        /* m == 0 means the ovector (one pair) is too small for the
         * pattern's groups; the whole match is still there. */
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(sc->md);
        size_t ms = (size_t)ov[0], me = (size_t)ov[1];
        if (ms > prev_end && (rc = split_level(sc, level + 1, a + prev_end, a + ms)) < 0)
            return rc;
        if ((rc = split_level(sc, level + 1, a + ms, a + me)) < 0)
            return rc;
        prev_end = start = me;
    }
    if (prev_end < n && (rc = split_level(sc, level + 1, a + prev_end, b)) < 0)
        return rc;
    return 0;
}

int inferd__pretok_split(const inferd__pretok *p, const char *subject, size_t len,
                         inferd__pretok_piece_fn fn, void *ctx, inferd_error *err)
{
    split_ctx sc = {p, NULL, subject, fn, ctx, err};
    int rc;

    if (len == 0)
        return 0;
    sc.md = pcre2_match_data_create(1, p->gctx);
    if (!sc.md)
        return inferd_fail(err, INFERD_E_NOMEM, "pre-tokenizer: no memory for match data");
    rc = split_level(&sc, 0, 0, len);
    pcre2_match_data_free(sc.md);
    return rc;
}
