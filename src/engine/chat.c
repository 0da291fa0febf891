/* Chat templates: recognise a Jinja chat-template source by its markers and
 * render messages in that template's style, byte for byte as llama.cpp's
 * llama_chat_apply_template does (see inferd/chat.h for the styles).
 * Rendering runs twice over the same messages: once to measure, once to
 * write into a buffer of exactly that size. No global state; any thread. */
#include "inferd/chat.h"

#include "inferd/alloc.h"

#include <assert.h>
#include <stdint.h>
#include <string.h>

/* ---- names ------------------------------------------------------------ */

static const char *const template_names[INFERD_CHAT_TEMPLATE_COUNT] = {
    [INFERD_CHAT_CHATML] = "chatml",
    [INFERD_CHAT_LLAMA2] = "llama-2",
    [INFERD_CHAT_LLAMA3] = "llama-3",
    [INFERD_CHAT_ZEPHYR] = "zephyr",
    [INFERD_CHAT_PHI3] = "phi-3",
    [INFERD_CHAT_MISTRAL] = "mistral",
    [INFERD_CHAT_GEMMA] = "gemma",
    [INFERD_CHAT_LLAMA2_SYS] = "llama-2-sys",
    [INFERD_CHAT_LLAMA2_SYS_BOS] = "llama-2-sys-bos",
    [INFERD_CHAT_LLAMA2_SYS_STRIP] = "llama-2-sys-strip",
    [INFERD_CHAT_MISTRAL_V1] = "mistral-v1",
    [INFERD_CHAT_MISTRAL_V3] = "mistral-v3",
    [INFERD_CHAT_MISTRAL_V3_TEKKEN] = "mistral-v3-tekken",
    [INFERD_CHAT_MISTRAL_V7] = "mistral-v7",
};

/* llama.cpp's spellings of the same templates (its --chat-template names). */
static const struct {
    const char *name;
    inferd_chat_template t;
} template_aliases[] = {
    {"llama2", INFERD_CHAT_LLAMA2},
    {"llama2-sys", INFERD_CHAT_LLAMA2_SYS},
    {"llama2-sys-bos", INFERD_CHAT_LLAMA2_SYS_BOS},
    {"llama2-sys-strip", INFERD_CHAT_LLAMA2_SYS_STRIP},
    {"llama3", INFERD_CHAT_LLAMA3},
    {"phi3", INFERD_CHAT_PHI3},
};

static bool template_valid(inferd_chat_template t)
{
    return (unsigned)t < INFERD_CHAT_TEMPLATE_COUNT;
}

const char *inferd_chat_template_name(inferd_chat_template t)
{
    return template_valid(t) ? template_names[t] : "unknown";
}

inferd_chat_template inferd_chat_template_family(inferd_chat_template t)
{
    switch (t) {
    case INFERD_CHAT_LLAMA2_SYS:
    case INFERD_CHAT_LLAMA2_SYS_BOS:
    case INFERD_CHAT_LLAMA2_SYS_STRIP: return INFERD_CHAT_LLAMA2;
    case INFERD_CHAT_MISTRAL_V1:
    case INFERD_CHAT_MISTRAL_V3:
    case INFERD_CHAT_MISTRAL_V3_TEKKEN:
    case INFERD_CHAT_MISTRAL_V7: return INFERD_CHAT_MISTRAL;
    default: return t;
    }
}

int inferd_chat_template_parse(const char *name, inferd_chat_template *out)
{
    assert(out);
    if (!name)
        return INFERD_E_INVALID;
    for (int i = 0; i < INFERD_CHAT_TEMPLATE_COUNT; i++) {
        if (strcmp(name, template_names[i]) == 0) {
            *out = (inferd_chat_template)i;
            return 0;
        }
    }
    for (size_t i = 0; i < sizeof(template_aliases) / sizeof(template_aliases[0]); i++) {
        if (strcmp(name, template_aliases[i].name) == 0) {
            *out = template_aliases[i].t;
            return 0;
        }
    }
    return INFERD_E_INVALID;
}

/* ---- detection ---------------------------------------------------------- */

/* What a template source looks like: one of ours, or a template llama.cpp
 * knows and inferd does not render (then detection must not fall through to
 * a later rule that llama.cpp would never reach). */
enum { DETECT_OTHER = -1, DETECT_NONE = -2 };

static int detect_inst(const char *src)
{
    if (strstr(src, "[SYSTEM_PROMPT]"))
        return INFERD_CHAT_MISTRAL_V7;
    /* The official v1 template writes ' [INST] ' + system_message; v3 and
     * v3-tekken are the ones with tool support. */
    if (strstr(src, "' [INST] ' + system_message") || strstr(src, "[AVAILABLE_TOOLS]")) {
        if (strstr(src, " [INST]"))
            return INFERD_CHAT_MISTRAL_V1;
        if (strstr(src, "\"[INST]\""))
            return INFERD_CHAT_MISTRAL_V3_TEKKEN;
        return INFERD_CHAT_MISTRAL_V3;
    }
    if (strstr(src, "content.strip()"))
        return INFERD_CHAT_LLAMA2_SYS_STRIP;
    if (strstr(src, "bos_token + '[INST]"))
        return INFERD_CHAT_LLAMA2_SYS_BOS;
    if (strstr(src, "<<SYS>>"))
        return INFERD_CHAT_LLAMA2_SYS;
    return INFERD_CHAT_LLAMA2;
}

/* llama.cpp's rules up to its last one for a template we render (llama-3),
 * in its order; later rules can only give templates we do not render. */
static int detect_markers(const char *src)
{
#define HAS(s) (strstr(src, (s)) != NULL)
    if (HAS("<|im_start|>"))
        return HAS("<|im_sep|>") ? DETECT_OTHER /* phi-4 */ : INFERD_CHAT_CHATML;
    if (strncmp(src, "mistral", 7) == 0 || HAS("[INST]"))
        return detect_inst(src);
    if (HAS("<|assistant|>") && HAS("<|end|>"))
        return INFERD_CHAT_PHI3;
    if (HAS("<|assistant|>") && HAS("<|user|>")) {
        if (HAS("</s>"))
            return DETECT_OTHER; /* falcon-3 */
        /* llama.cpp says glm-edge here, whose turns end with nothing; the
         * zephyr templates end each turn with the EOS token. */
        if (HAS("eos_token") || HAS("<|endoftext|>"))
            return INFERD_CHAT_ZEPHYR;
        return DETECT_OTHER; /* glm-edge */
    }
    if (HAS("<|user|>") && HAS("<|endoftext|>"))
        return INFERD_CHAT_ZEPHYR;
    if (HAS("bos_token + message['role']"))
        return DETECT_OTHER; /* monarch */
    if (HAS("<start_of_turn>"))
        return INFERD_CHAT_GEMMA;
    if (HAS("'\\n\\nAssistant: ' + eos_token") || HAS("GPT4 Correct ") ||
        (HAS("USER: ") && HAS("ASSISTANT: ")) || (HAS("### Instruction:") && HAS("<|EOT|>")) ||
        (HAS("<|START_OF_TURN_TOKEN|>") && HAS("<|USER_TOKEN|>")))
        return DETECT_OTHER; /* orion, openchat, vicuna, deepseek, command-r */
    if (HAS("<|start_header_id|>") && HAS("<|end_header_id|>"))
        return INFERD_CHAT_LLAMA3;
    return DETECT_NONE;
#undef HAS
}

int inferd_chat_template_detect(const char *src, inferd_chat_template *out)
{
    int t;

    assert(out);
    if (!src || !*src)
        return INFERD_E_NOT_FOUND;
    if (inferd_chat_template_parse(src, out) == 0)
        return 0;
    t = detect_markers(src);
    if (t < 0)
        return INFERD_E_NOT_FOUND;
    *out = (inferd_chat_template)t;
    return 0;
}

/* ---- rendering ---------------------------------------------------------- */

typedef enum role { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT, ROLE_UNKNOWN } role;

static role role_of(const char *r)
{
    if (strcmp(r, "system") == 0)
        return ROLE_SYSTEM;
    if (strcmp(r, "user") == 0)
        return ROLE_USER;
    if (strcmp(r, "assistant") == 0)
        return ROLE_ASSISTANT;
    return ROLE_UNKNOWN;
}

/* A byte sink that measures (buf == NULL) or writes. The length never
 * exceeds SIZE_MAX - 1, leaving room for the NUL. */
typedef struct sink {
    char *buf;
    size_t len;
    bool too_long;
} sink;

static void put(sink *s, const char *p, size_t n)
{
    if (s->too_long || n > SIZE_MAX - 1 - s->len) {
        s->too_long = true;
        return;
    }
    if (s->buf)
        memcpy(s->buf + s->len, p, n);
    s->len += n;
}

static void puts_(sink *s, const char *p) { put(s, p, strlen(p)); }

static bool is_space(char c)
{
    /* isspace() in the C locale, which is what llama.cpp's trim uses. */
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* The bytes of @p str without leading and trailing ASCII whitespace. */
typedef struct span {
    const char *p;
    size_t n;
} span;

static span trimmed(const char *str)
{
    size_t b = 0, e = strlen(str);
    while (b < e && is_space(str[b]))
        b++;
    while (e > b && is_space(str[e - 1]))
        e--;
    return (span){str + b, e - b};
}

static span whole(const char *str) { return (span){str, strlen(str)}; }

static void put_span(sink *s, span v) { put(s, v.p, v.n); }

/* chatml, phi-3, zephyr, llama-3: every message is
 * open + role + after_role + content + after_content. */
typedef struct simple_style {
    const char *open, *after_role, *after_content, *gen;
    bool trim;
} simple_style;

static const simple_style style_chatml = {"<|im_start|>", "\n", "<|im_end|>\n",
                                          "<|im_start|>assistant\n", false};
static const simple_style style_phi3 = {"<|", "|>\n", "<|end|>\n", "<|assistant|>\n", false};
static const simple_style style_zephyr = {"<|", "|>\n", "<|endoftext|>\n", "<|assistant|>\n",
                                          false};
static const simple_style style_llama3 = {
    "<|start_header_id|>", "<|end_header_id|>\n\n", "<|eot_id|>",
    "<|start_header_id|>assistant<|end_header_id|>\n\n", true};

static void render_simple(sink *s, const simple_style *st, const inferd_chat_message *m, size_t n,
                          bool gen)
{
    for (size_t i = 0; i < n; i++) {
        puts_(s, st->open);
        puts_(s, m[i].role);
        puts_(s, st->after_role);
        put_span(s, st->trim ? trimmed(m[i].content) : whole(m[i].content));
        puts_(s, st->after_content);
    }
    if (gen)
        puts_(s, st->gen);
}

/* Gemma has no system role: the (trimmed) system text opens the next user
 * turn. A later system message replaces a pending one. */
static void render_gemma(sink *s, const inferd_chat_message *m, size_t n, bool gen)
{
    span sys = {NULL, 0};

    for (size_t i = 0; i < n; i++) {
        role r = role_of(m[i].role);
        if (r == ROLE_SYSTEM) {
            sys = trimmed(m[i].content);
            continue;
        }
        puts_(s, r == ROLE_ASSISTANT ? "<start_of_turn>model\n" : "<start_of_turn>user\n");
        if (sys.n > 0 && r != ROLE_ASSISTANT) {
            put_span(s, sys);
            puts_(s, "\n\n");
            sys.n = 0;
        }
        put_span(s, trimmed(m[i].content));
        puts_(s, "<end_of_turn>\n");
    }
    if (gen)
        puts_(s, "<start_of_turn>model\n");
}

/* llama-2 and its variants (and pre-v1 mistral). A turn is "[INST] " + the
 * system and user texts + " [/INST]" + the answer + "</s>"; the first
 * "[INST] " is written up front, so a conversation that starts with an
 * assistant message still opens with it. */
static void render_llama2(sink *s, inferd_chat_template t, const inferd_chat_message *m, size_t n)
{
    const bool sys_block = t == INFERD_CHAT_LLAMA2_SYS || t == INFERD_CHAT_LLAMA2_SYS_BOS ||
                           t == INFERD_CHAT_LLAMA2_SYS_STRIP;
    const bool bos_in_history = t == INFERD_CHAT_LLAMA2_SYS_BOS;
    const bool strip = t == INFERD_CHAT_LLAMA2_SYS_STRIP;
    bool in_turn = true;

    puts_(s, "[INST] ");
    for (size_t i = 0; i < n; i++) {
        span c = strip ? trimmed(m[i].content) : whole(m[i].content);
        role r = role_of(m[i].role);
        if (!in_turn) {
            in_turn = true;
            puts_(s, bos_in_history ? "<s>[INST] " : "[INST] ");
        }
        if (r == ROLE_SYSTEM) {
            puts_(s, sys_block ? "<<SYS>>\n" : "");
            put_span(s, c);
            puts_(s, sys_block ? "\n<</SYS>>\n\n" : "\n");
        } else if (r == ROLE_USER) {
            put_span(s, c);
            puts_(s, " [/INST]");
        } else {
            put_span(s, c);
            puts_(s, "</s>");
            in_turn = false;
        }
    }
}

/* Mistral's v1, v3 and v3-tekken: they differ only in the spaces around
 * [INST] and in v3 trimming the answers. */
static void render_mistral(sink *s, inferd_chat_template t, const inferd_chat_message *m, size_t n)
{
    const char *lead = t == INFERD_CHAT_MISTRAL_V1 ? " " : "";
    const char *trail = t == INFERD_CHAT_MISTRAL_V3_TEKKEN ? "" : " ";
    const bool trim_answer = t == INFERD_CHAT_MISTRAL_V3;
    bool in_turn = false;

    for (size_t i = 0; i < n; i++) {
        role r = role_of(m[i].role);
        if (!in_turn) {
            puts_(s, lead);
            puts_(s, "[INST]");
            puts_(s, trail);
            in_turn = true;
        }
        if (r == ROLE_SYSTEM) {
            puts_(s, m[i].content);
            puts_(s, "\n\n");
        } else if (r == ROLE_USER) {
            puts_(s, m[i].content);
            puts_(s, lead);
            puts_(s, "[/INST]");
        } else {
            puts_(s, trail);
            put_span(s, trim_answer ? trimmed(m[i].content) : whole(m[i].content));
            puts_(s, "</s>");
            in_turn = false;
        }
    }
}

static void render_mistral_v7(sink *s, const inferd_chat_message *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        role r = role_of(m[i].role);
        if (r == ROLE_SYSTEM) {
            puts_(s, "[SYSTEM_PROMPT] ");
            puts_(s, m[i].content);
            puts_(s, "[/SYSTEM_PROMPT]");
        } else if (r == ROLE_USER) {
            puts_(s, "[INST] ");
            puts_(s, m[i].content);
            puts_(s, "[/INST]");
        } else {
            puts_(s, " ");
            puts_(s, m[i].content);
            puts_(s, "</s>");
        }
    }
}

static void render(sink *s, inferd_chat_template t, const inferd_chat_message *m, size_t n,
                   bool gen)
{
    switch (t) {
    case INFERD_CHAT_CHATML: render_simple(s, &style_chatml, m, n, gen); break;
    case INFERD_CHAT_PHI3: render_simple(s, &style_phi3, m, n, gen); break;
    case INFERD_CHAT_ZEPHYR: render_simple(s, &style_zephyr, m, n, gen); break;
    case INFERD_CHAT_LLAMA3: render_simple(s, &style_llama3, m, n, gen); break;
    case INFERD_CHAT_GEMMA: render_gemma(s, m, n, gen); break;
    case INFERD_CHAT_LLAMA2:
    case INFERD_CHAT_MISTRAL:
    case INFERD_CHAT_LLAMA2_SYS:
    case INFERD_CHAT_LLAMA2_SYS_BOS:
    case INFERD_CHAT_LLAMA2_SYS_STRIP: render_llama2(s, t, m, n); break;
    case INFERD_CHAT_MISTRAL_V1:
    case INFERD_CHAT_MISTRAL_V3:
    case INFERD_CHAT_MISTRAL_V3_TEKKEN: render_mistral(s, t, m, n); break;
    case INFERD_CHAT_MISTRAL_V7: render_mistral_v7(s, m, n); break;
    }
}

/* Quote an untrusted role for an error message: at most 32 bytes, printable
 * ASCII as is (but ' and \ escaped), everything else as \xHH, so the message
 * stays short and valid UTF-8 whatever the client sent. */
static void quote_role(const char *r, char *buf, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, i;

    assert(cap >= 32 * 4 + 4);
    (void)cap; /* only the assert reads it */
    for (i = 0; r[i] && i < 32; i++) {
        unsigned char c = (unsigned char)r[i];
        if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
            buf[o++] = (char)c;
        } else {
            buf[o++] = '\\';
            buf[o++] = 'x';
            buf[o++] = hex[c >> 4];
            buf[o++] = hex[c & 15];
        }
    }
    if (r[i]) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
}

int inferd_chat_render(inferd_chat_template t, const inferd_chat_message *msgs, size_t n,
                       bool add_generation_prompt, char **out, size_t *out_len, inferd_error *err)
{
    sink s = {0};
    char *buf;

    assert(out);
    if (!template_valid(t))
        return inferd_fail(err, INFERD_E_INVALID, "chat template %d: out of range", (int)t);
    if (n == 0)
        return inferd_fail(err, INFERD_E_INVALID,
                           "messages: empty (at least one message is required)");
    if (!msgs)
        return inferd_fail(err, INFERD_E_INVALID, "messages: NULL array of %zu messages", n);
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].role)
            return inferd_fail(err, INFERD_E_INVALID,
                               "messages[%zu].role: missing (expected system, user or "
                               "assistant)",
                               i);
        if (role_of(msgs[i].role) == ROLE_UNKNOWN) {
            char q[32 * 4 + 4];
            quote_role(msgs[i].role, q, sizeof(q));
            return inferd_fail(err, INFERD_E_INVALID,
                               "messages[%zu].role: unknown role '%s' (expected system, user "
                               "or assistant)",
                               i, q);
        }
        if (!msgs[i].content)
            return inferd_fail(err, INFERD_E_INVALID, "messages[%zu].content: missing", i);
    }

    render(&s, t, msgs, n, add_generation_prompt);
    if (s.too_long)
        return inferd_fail(err, INFERD_E_RANGE, "chat prompt: longer than SIZE_MAX bytes");
    buf = inferd_malloc(s.len + 1);
    if (!buf)
        return inferd_fail(err, INFERD_E_NOMEM, "chat prompt: no memory for %zu bytes", s.len + 1);
    /* Second pass: the same messages give the same length. */
    size_t measured = s.len;
    s = (sink){.buf = buf};
    render(&s, t, msgs, n, add_generation_prompt);
    assert(s.len == measured);
    (void)measured;
    buf[s.len] = '\0';
    *out = buf;
    if (out_len)
        *out_len = s.len;
    return 0;
}
