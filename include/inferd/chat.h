/* Chat templates: turn a list of chat messages into the prompt text a model
 * was trained on, for /v1/chat/completions.
 *
 * The model's template is the Jinja source in the GGUF key
 * `tokenizer.chat_template`. inferd does not run Jinja: it recognises the
 * template by distinctive markers in the source (the way llama.cpp's
 * llama_chat_apply_template does) and renders the family in C. The output is
 * byte-for-byte what llama.cpp c392e5094's llama_chat_apply_template gives
 * for the same template, so it is meant to be tokenized the way llama.cpp's
 * server does: add_special = true (the tokenizer adds BOS if the vocabulary
 * says so; no renderer writes a leading "<s>") and parse_special = true
 * (marker texts such as "<|im_start|>" become their control tokens).
 *
 * Families and the variants llama.cpp renders differently:
 *
 *   name                 looks like (system, user, assistant "A", then the
 *                        generation prompt where there is one)
 *   chatml               <|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU
 *                        <|im_end|>\n ... <|im_start|>assistant\n
 *   llama-2              [INST] S\nU [/INST]A</s>[INST] U2 [/INST]
 *   llama-2-sys          [INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST]A</s>[INST] ...
 *   llama-2-sys-bos      as llama-2-sys, later turns open with <s>[INST]
 *   llama-2-sys-strip    as llama-2-sys, every content trimmed
 *   mistral              pre-v1 Mistral: rendered exactly as llama-2
 *   mistral-v1           " [INST] S\n\nU [/INST] A</s> [INST] U2 [/INST]"
 *   mistral-v3           [INST] S\n\nU[/INST] trim(A)</s>[INST] U2[/INST]
 *   mistral-v3-tekken    [INST]S\n\nU[/INST]A</s>[INST]U2[/INST]
 *   mistral-v7           [SYSTEM_PROMPT] S[/SYSTEM_PROMPT][INST] U[/INST] A</s>
 *   llama-3              <|start_header_id|>R<|end_header_id|>\n\ntrim(C)
 *                        <|eot_id|> ... <|start_header_id|>assistant
 *                        <|end_header_id|>\n\n
 *   phi-3                <|R|>\nC<|end|>\n ... <|assistant|>\n
 *   zephyr               <|R|>\nC<|endoftext|>\n ... <|assistant|>\n
 *   gemma                <start_of_turn>user\ntrim(S)\n\ntrim(U)<end_of_turn>\n
 *                        <start_of_turn>model\ntrim(A)<end_of_turn>\n ...
 *                        <start_of_turn>model\n
 *
 * The llama-2 and mistral styles have no generation prompt: their text
 * already ends where the assistant's answer starts, and add_generation_prompt
 * changes nothing (as in llama.cpp). Templates without a system role fold a
 * system message into the next user turn (llama-2, mistral, gemma; gemma keeps
 * only the last system message before a user turn and drops one that no user
 * turn follows). "Trim" removes ASCII whitespace (space, \t, \n, \v, \f, \r)
 * at both ends.
 *
 * Everything here is pure: no global state, Thread: any.
 */
#ifndef INFERD_CHAT_H
#define INFERD_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "inferd/error.h"

/** A chat template. The first INFERD_CHAT_FAMILY_COUNT values are the
 * families; the others are variants of llama-2 and mistral that llama.cpp
 * renders differently and that detection tells apart. */
typedef enum inferd_chat_template {
    INFERD_CHAT_CHATML = 0,        /* "chatml" */
    INFERD_CHAT_LLAMA2,            /* "llama-2": no <<SYS>> block */
    INFERD_CHAT_LLAMA3,            /* "llama-3" */
    INFERD_CHAT_ZEPHYR,            /* "zephyr" */
    INFERD_CHAT_PHI3,              /* "phi-3" */
    INFERD_CHAT_MISTRAL,           /* "mistral": pre-v1, rendered as llama-2 */
    INFERD_CHAT_GEMMA,             /* "gemma" */
    INFERD_CHAT_LLAMA2_SYS,        /* "llama-2-sys": <<SYS>> block */
    INFERD_CHAT_LLAMA2_SYS_BOS,    /* "llama-2-sys-bos": <s> before later turns */
    INFERD_CHAT_LLAMA2_SYS_STRIP,  /* "llama-2-sys-strip": trimmed contents */
    INFERD_CHAT_MISTRAL_V1,        /* "mistral-v1" */
    INFERD_CHAT_MISTRAL_V3,        /* "mistral-v3" */
    INFERD_CHAT_MISTRAL_V3_TEKKEN, /* "mistral-v3-tekken" */
    INFERD_CHAT_MISTRAL_V7,        /* "mistral-v7" */
} inferd_chat_template;

/** Number of families: values 0 .. INFERD_CHAT_FAMILY_COUNT-1. */
#define INFERD_CHAT_FAMILY_COUNT 7
/** Number of templates (families and variants): values 0 .. COUNT-1. */
#define INFERD_CHAT_TEMPLATE_COUNT 14

/** One chat message. Both strings are borrowed and NUL-terminated. */
typedef struct inferd_chat_message {
    const char *role;    /* "system", "user" or "assistant" */
    const char *content; /* UTF-8 text, copied into the prompt as is */
} inferd_chat_message;

/**
 * Name of a template: "chatml", "llama-2", "llama-3", "zephyr", "phi-3",
 * "mistral", "gemma", "llama-2-sys", "llama-2-sys-bos", "llama-2-sys-strip",
 * "mistral-v1", "mistral-v3", "mistral-v3-tekken", "mistral-v7".
 * @return a static string; "unknown" for a value out of range. Thread: any.
 */
const char *inferd_chat_template_name(inferd_chat_template t);

/**
 * The family of @p t: itself for a family, INFERD_CHAT_LLAMA2 for the
 * llama-2-sys* variants, INFERD_CHAT_MISTRAL for mistral-v*. A value out of
 * range is returned unchanged. Thread: any.
 */
inferd_chat_template inferd_chat_template_family(inferd_chat_template t);

/**
 * Parse a template name, e.g. the value of a --chat-template flag.
 *
 * Accepts the names inferd_chat_template_name gives, and llama.cpp's
 * spellings of the same templates ("llama2", "llama2-sys", "llama2-sys-bos",
 * "llama2-sys-strip", "llama3", "phi3"). Case-sensitive.
 * @return 0 and *out; INFERD_E_INVALID for NULL or any other name (*out
 * untouched). Thread: any.
 */
int inferd_chat_template_parse(const char *name, inferd_chat_template *out);

/**
 * Recognise a Jinja chat-template source (`tokenizer.chat_template`).
 *
 * A source that is itself a template name (see inferd_chat_template_parse)
 * is that template. Otherwise the first matching rule wins, in llama.cpp's
 * order: "<|im_start|>" is chatml (but phi-4 when it also has "<|im_sep|>");
 * a source starting with "mistral" or containing "[INST]" is mistral-v7 if
 * it has "[SYSTEM_PROMPT]", mistral-v1/-v3/-v3-tekken if it has the v1
 * system line or "[AVAILABLE_TOOLS]", else llama-2-sys-strip
 * ("content.strip()"), llama-2-sys-bos ("bos_token + '[INST]"), llama-2-sys
 * ("<<SYS>>") or llama-2; "<|assistant|>" with "<|end|>" is phi-3;
 * "<|assistant|>" with "<|user|>" is falcon-3 if it has "</s>", zephyr if it
 * has "eos_token" or "<|endoftext|>", else glm-edge; "<|user|>" with
 * "<|endoftext|>" is zephyr; "<start_of_turn>" is gemma;
 * "<|start_header_id|>" with "<|end_header_id|>" is llama-3. Sources that
 * llama.cpp recognises as one of its other templates (phi-4, falcon-3,
 * glm-edge, monarch, orion, openchat, vicuna, deepseek, command-r) are not
 * recognised.
 *
 * Deviation from llama.cpp: it takes the real zephyr template (roles written
 * as '<|user|>\n' + content + eos_token: zephyr-7b-beta, TinyLlama-Chat) for
 * glm-edge, which inferd does not render; inferd renders it as zephyr.
 *
 * @param src  borrowed, NUL-terminated; may be NULL.
 * @return 0 and *out; INFERD_E_NOT_FOUND when @p src is NULL, empty or not
 * recognised (*out untouched; the caller then uses chatml and logs a
 * warning). Thread: any.
 */
int inferd_chat_template_detect(const char *src, inferd_chat_template *out);

/**
 * Render @p n messages with template @p t into a prompt.
 *
 * Output matches llama.cpp's llama_chat_apply_template (see the table at the
 * top of this file); contents are copied byte for byte (or trimmed where the
 * template trims), never escaped, so marker text inside a message is
 * tokenized as a marker when parse_special is on, as in llama.cpp.
 *
 * @param msgs   borrowed array of @p n messages; n >= 1. Roles must be
 *               exactly "system", "user" or "assistant".
 * @param add_generation_prompt  end with the opening of an assistant turn
 *               (no effect on llama-2 and mistral styles, see above).
 * @param out    receives the prompt, NUL-terminated, allocated with
 *               inferd_malloc: release it with inferd_free.
 * @param out_len receives its length in bytes (without the NUL); may be NULL.
 * @return 0 and *out, *out_len; INFERD_E_INVALID (t out of range, n == 0,
 * msgs NULL, a NULL role or content, an unknown role: the message names the
 * field, e.g. "messages[2].role: unknown role 'tool' (expected system, user
 * or assistant)"); INFERD_E_RANGE (prompt longer than SIZE_MAX);
 * INFERD_E_NOMEM. Outputs are written only on success. Thread: any.
 */
int inferd_chat_render(inferd_chat_template t, const inferd_chat_message *msgs, size_t n,
                       bool add_generation_prompt, char **out, size_t *out_len, inferd_error *err);

#endif
