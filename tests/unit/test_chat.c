/* Chat templates against llama.cpp c392e5094: rendered prompts equal
 * llama_chat_apply_template's (expected texts from its
 * tests/test-chat-template.cpp, or recorded from libllama where that file
 * has none: tests/fixtures/chat/README.md), and real template sources in
 * tests/fixtures/chat/ are recognised as their family. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inferd/alloc.h"
#include "inferd/chat.h"

/* The conversation of llama.cpp's tests/test-chat-template.cpp. */
static const inferd_chat_message conversation[] = {
    {"system", "You are a helpful assistant"},
    {"user", "Hello"},
    {"assistant", "Hi there"},
    {"user", "Who are you"},
    {"assistant", "   I am an assistant   "},
    {"user", "Another question"},
};
#define N_CONV (sizeof(conversation) / sizeof(conversation[0]))

/* ---- expected prompts (add_generation_prompt = true) -------------------- */

/* llama.cpp c392e5094 tests/test-chat-template.cpp, expected_output of
 * "teknium/OpenHermes-2.5-Mistral-7B" */
static const char *const expect_chatml = "<|im_start|>system\n"
                                         "You are a helpful assistant<|im_end|>\n"
                                         "<|im_start|>user\n"
                                         "Hello<|im_end|>\n"
                                         "<|im_start|>assistant\n"
                                         "Hi there<|im_end|>\n"
                                         "<|im_start|>user\n"
                                         "Who are you<|im_end|>\n"
                                         "<|im_start|>assistant\n"
                                         "   I am an assistant   <|im_end|>\n"
                                         "<|im_start|>user\n"
                                         "Another question<|im_end|>\n"
                                         "<|im_start|>assistant\n";
/* test-chat-template.cpp, expected_output of "mistralai/Mistral-7B-Instruct-v0.2
 * (NOTE: Old pre-v1 without a system prompt)", which llama.cpp renders as llama2 */
static const char *const expect_llama_2 =
    "[INST] You are a helpful assistant\n"
    "Hello [/INST]Hi there</s>[INST] Who are you [/INST]   I am an assistant   </s>[INST] "
    "Another question [/INST]";
/* test-chat-template.cpp, expected_output of "Llama-3" */
static const char *const expect_llama_3 =
    "<|start_header_id|>system<|end_header_id|>\n"
    "\n"
    "You are a helpful assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
    "\n"
    "Hello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
    "\n"
    "Hi there<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
    "\n"
    "Who are you<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
    "\n"
    "I am an assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
    "\n"
    "Another question<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
    "\n";
/* llama_chat_apply_template("zephyr", conversation, add_ass = true) of
 * llama.cpp c392e5094's libllama (test-chat-template.cpp has no zephyr case) */
static const char *const expect_zephyr = "<|system|>\n"
                                         "You are a helpful assistant<|endoftext|>\n"
                                         "<|user|>\n"
                                         "Hello<|endoftext|>\n"
                                         "<|assistant|>\n"
                                         "Hi there<|endoftext|>\n"
                                         "<|user|>\n"
                                         "Who are you<|endoftext|>\n"
                                         "<|assistant|>\n"
                                         "   I am an assistant   <|endoftext|>\n"
                                         "<|user|>\n"
                                         "Another question<|endoftext|>\n"
                                         "<|assistant|>\n";
/* test-chat-template.cpp, expected_output of "Phi-3-mini" */
static const char *const expect_phi_3 = "<|system|>\n"
                                        "You are a helpful assistant<|end|>\n"
                                        "<|user|>\n"
                                        "Hello<|end|>\n"
                                        "<|assistant|>\n"
                                        "Hi there<|end|>\n"
                                        "<|user|>\n"
                                        "Who are you<|end|>\n"
                                        "<|assistant|>\n"
                                        "   I am an assistant   <|end|>\n"
                                        "<|user|>\n"
                                        "Another question<|end|>\n"
                                        "<|assistant|>\n";
/* llama_chat_apply_template("mistral", ...) of libllama c392e5094: the
 * pre-v1 style, the same text as llama2 */
static const char *const expect_mistral =
    "[INST] You are a helpful assistant\n"
    "Hello [/INST]Hi there</s>[INST] Who are you [/INST]   I am an assistant   </s>[INST] "
    "Another question [/INST]";
/* test-chat-template.cpp, expected_output of "google/gemma-7b-it" */
static const char *const expect_gemma = "<start_of_turn>user\n"
                                        "You are a helpful assistant\n"
                                        "\n"
                                        "Hello<end_of_turn>\n"
                                        "<start_of_turn>model\n"
                                        "Hi there<end_of_turn>\n"
                                        "<start_of_turn>user\n"
                                        "Who are you<end_of_turn>\n"
                                        "<start_of_turn>model\n"
                                        "I am an assistant<end_of_turn>\n"
                                        "<start_of_turn>user\n"
                                        "Another question<end_of_turn>\n"
                                        "<start_of_turn>model\n";
/* llama_chat_apply_template("llama2-sys", ...) of libllama c392e5094 */
static const char *const expect_llama_2_sys =
    "[INST] <<SYS>>\n"
    "You are a helpful assistant\n"
    "<</SYS>>\n"
    "\n"
    "Hello [/INST]Hi there</s>[INST] Who are you [/INST]   I am an assistant   </s>[INST] "
    "Another question [/INST]";
/* test-chat-template.cpp, expected_output of "TheBloke/FusionNet_34Bx2_MoE-AWQ" */
static const char *const expect_llama_2_sys_bos =
    "[INST] <<SYS>>\n"
    "You are a helpful assistant\n"
    "<</SYS>>\n"
    "\n"
    "Hello [/INST]Hi there</s><s>[INST] Who are you [/INST]   I am an assistant   </s><s>[INST] "
    "Another question [/INST]";
/* test-chat-template.cpp, expected_output of "bofenghuang/vigogne-2-70b-chat" */
static const char *const expect_llama_2_sys_strip =
    "[INST] <<SYS>>\n"
    "You are a helpful assistant\n"
    "<</SYS>>\n"
    "\n"
    "Hello [/INST]Hi there</s>[INST] Who are you [/INST]I am an assistant</s>[INST] Another "
    "question [/INST]";
/* test-chat-template.cpp, expected_output of "mistralai/Mistral-7B-Instruct-v0.2
 * (mistralai 'v1' template with a system prompt)" */
static const char *const expect_mistral_v1 =
    " [INST] You are a helpful assistant\n"
    "\n"
    "Hello [/INST] Hi there</s> [INST] Who are you [/INST]    I am an assistant   </s> [INST] "
    "Another question [/INST]";
/* test-chat-template.cpp, expected_output of "Mistral-Large-Instruct-2407
 * (mistralai 'v3' template; modified to have system prompt at start)" */
static const char *const expect_mistral_v3 =
    "[INST] You are a helpful assistant\n"
    "\n"
    "Hello[/INST] Hi there</s>[INST] Who are you[/INST] I am an assistant</s>[INST] Another "
    "question[/INST]";
/* test-chat-template.cpp, expected_output of "Mistral-Nemo-Instruct-2407
 * (mistralai 'v3-tekken' template; modified to have system prompt at start)" */
static const char *const expect_mistral_v3_tekken =
    "[INST]You are a helpful assistant\n"
    "\n"
    "Hello[/INST]Hi there</s>[INST]Who are you[/INST]   I am an assistant   </s>[INST]Another "
    "question[/INST]";
/* test-chat-template.cpp, expected_output of "mistralai/Mistral-Large-Instruct-2411
 * (mistralai 'v7' template)" */
static const char *const expect_mistral_v7 =
    "[SYSTEM_PROMPT] You are a helpful assistant[/SYSTEM_PROMPT][INST] Hello[/INST] Hi "
    "there</s>[INST] Who are you[/INST]    I am an assistant   </s>[INST] Another "
    "question[/INST]";

/* add_generation_prompt = false: llama_chat_apply_template(name, ..., add_ass
 * = false) of libllama c392e5094. */
static const char *const expect_chatml_nogen = "<|im_start|>system\n"
                                               "You are a helpful assistant<|im_end|>\n"
                                               "<|im_start|>user\n"
                                               "Hello<|im_end|>\n"
                                               "<|im_start|>assistant\n"
                                               "Hi there<|im_end|>\n"
                                               "<|im_start|>user\n"
                                               "Who are you<|im_end|>\n"
                                               "<|im_start|>assistant\n"
                                               "   I am an assistant   <|im_end|>\n"
                                               "<|im_start|>user\n"
                                               "Another question<|im_end|>\n";
static const char *const expect_llama_3_nogen =
    "<|start_header_id|>system<|end_header_id|>\n"
    "\n"
    "You are a helpful assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
    "\n"
    "Hello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
    "\n"
    "Hi there<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
    "\n"
    "Who are you<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
    "\n"
    "I am an assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
    "\n"
    "Another question<|eot_id|>";

/* ---- helpers ------------------------------------------------------------- */

/* Render and compare, also checking the length and the NUL. */
static void check_render(inferd_chat_template t, const inferd_chat_message *m, size_t n, bool gen,
                         const char *expected)
{
    inferd_error err = {0};
    char *out = NULL;
    size_t len = 12345;
    int rc = inferd_chat_render(t, m, n, gen, &out, &len, &err);
    if (rc != 0)
        fail_msg("%s: rc %d: %s", inferd_chat_template_name(t), rc, err.msg);
    assert_non_null(out);
    if (strcmp(out, expected) != 0)
        fail_msg("%s (gen=%d):\nexpected: [%s]\nactual:   [%s]", inferd_chat_template_name(t),
                 (int)gen, expected, out);
    assert_int_equal(len, strlen(expected));
    assert_int_equal(out[len], '\0');
    inferd_free(out);
}

static char *render_ok(inferd_chat_template t, const inferd_chat_message *m, size_t n, bool gen)
{
    inferd_error err = {0};
    char *out = NULL;
    if (inferd_chat_render(t, m, n, gen, &out, NULL, &err) != 0)
        fail_msg("%s: %s", inferd_chat_template_name(t), err.msg);
    return out;
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    long sz;
    char *buf;
    if (!f)
        fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)sz + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)sz, f), (size_t)sz);
    buf[sz] = '\0';
    fclose(f);
    return buf;
}

static json_t *load_expected(void)
{
    json_error_t jerr;
    json_t *j = json_load_file(INFERD_FIXTURES "/chat/expected.json", 0, &jerr);
    if (!j)
        fail_msg("cannot read %s: %s", INFERD_FIXTURES "/chat/expected.json", jerr.text);
    return j;
}

static inferd_chat_template parse_ok(const char *name)
{
    inferd_chat_template t;
    if (inferd_chat_template_parse(name, &t) != 0)
        fail_msg("template name '%s' does not parse", name);
    return t;
}

/* ---- one test per template ---------------------------------------------- */

#define RENDER_TEST(fn, tmpl, expected)                           \
    static void fn(void **state)                                  \
    {                                                             \
        (void)state;                                              \
        check_render(tmpl, conversation, N_CONV, true, expected); \
    }

RENDER_TEST(test_chat_render_chatml, INFERD_CHAT_CHATML, expect_chatml)
RENDER_TEST(test_chat_render_llama2, INFERD_CHAT_LLAMA2, expect_llama_2)
RENDER_TEST(test_chat_render_llama3, INFERD_CHAT_LLAMA3, expect_llama_3)
RENDER_TEST(test_chat_render_zephyr, INFERD_CHAT_ZEPHYR, expect_zephyr)
RENDER_TEST(test_chat_render_phi3, INFERD_CHAT_PHI3, expect_phi_3)
RENDER_TEST(test_chat_render_mistral, INFERD_CHAT_MISTRAL, expect_mistral)
RENDER_TEST(test_chat_render_gemma, INFERD_CHAT_GEMMA, expect_gemma)
RENDER_TEST(test_chat_render_llama2_sys, INFERD_CHAT_LLAMA2_SYS, expect_llama_2_sys)
RENDER_TEST(test_chat_render_llama2_sys_bos, INFERD_CHAT_LLAMA2_SYS_BOS, expect_llama_2_sys_bos)
RENDER_TEST(test_chat_render_llama2_sys_strip, INFERD_CHAT_LLAMA2_SYS_STRIP,
            expect_llama_2_sys_strip)
RENDER_TEST(test_chat_render_mistral_v1, INFERD_CHAT_MISTRAL_V1, expect_mistral_v1)
RENDER_TEST(test_chat_render_mistral_v3, INFERD_CHAT_MISTRAL_V3, expect_mistral_v3)
RENDER_TEST(test_chat_render_mistral_v3_tekken, INFERD_CHAT_MISTRAL_V3_TEKKEN,
            expect_mistral_v3_tekken)
RENDER_TEST(test_chat_render_mistral_v7, INFERD_CHAT_MISTRAL_V7, expect_mistral_v7)

static void test_chat_render_no_generation_prompt(void **state)
{
    (void)state;
    check_render(INFERD_CHAT_CHATML, conversation, N_CONV, false, expect_chatml_nogen);
    check_render(INFERD_CHAT_LLAMA3, conversation, N_CONV, false, expect_llama_3_nogen);
    /* llama-2 and mistral styles have no generation prompt: same text. */
    check_render(INFERD_CHAT_MISTRAL_V7, conversation, N_CONV, false, expect_mistral_v7);
}

/* Every template, both add_generation_prompt values, against the prompts
 * recorded from libllama in expected.json ("names"). */
static void test_chat_render_all_recorded(void **state)
{
    (void)state;
    json_t *j = load_expected();
    json_t *conv = json_object_get(j, "conversation");
    json_t *names = json_object_get(j, "names");
    size_t i;
    json_t *e;
    bool seen[INFERD_CHAT_TEMPLATE_COUNT] = {0};

    /* The recorded conversation is the one above. */
    assert_int_equal(json_array_size(conv), N_CONV);
    for (i = 0; i < N_CONV; i++) {
        json_t *m = json_array_get(conv, i);
        assert_string_equal(json_string_value(json_object_get(m, "role")), conversation[i].role);
        assert_string_equal(json_string_value(json_object_get(m, "content")),
                            conversation[i].content);
    }
    json_array_foreach (names, i, e) {
        inferd_chat_template t = parse_ok(json_string_value(json_object_get(e, "template")));
        seen[t] = true;
        check_render(t, conversation, N_CONV, true,
                     json_string_value(json_object_get(e, "prompt_gen")));
        check_render(t, conversation, N_CONV, false,
                     json_string_value(json_object_get(e, "prompt_nogen")));
    }
    for (i = 0; i < INFERD_CHAT_TEMPLATE_COUNT; i++)
        if (!seen[i])
            fail_msg("expected.json records no prompt for %s",
                     inferd_chat_template_name((inferd_chat_template)i));
    json_decref(j);
}

/* llama.cpp's common_chat_format_single: the text a new message adds to a
 * conversation (a leading "\n" kept when the past ends with one). */
static char *format_single(inferd_chat_template t, const inferd_chat_message *past, size_t n_past,
                           inferd_chat_message next, bool add_ass)
{
    inferd_chat_message all[8];
    char *before = n_past ? render_ok(t, past, n_past, false) : NULL;
    size_t before_len = before ? strlen(before) : 0;
    char *after, *delta;
    bool nl;

    assert_true(n_past < 8);
    if (n_past)
        memcpy(all, past, n_past * sizeof(*past));
    all[n_past] = next;
    after = render_ok(t, all, n_past + 1, add_ass);
    assert_true(strlen(after) >= before_len);
    assert_memory_equal(after, before ? before : "", before_len);
    nl = add_ass && before_len > 0 && before[before_len - 1] == '\n';
    delta = malloc(strlen(after) - before_len + 2);
    assert_non_null(delta);
    snprintf(delta, strlen(after) - before_len + 2, "%s%s", nl ? "\n" : "", after + before_len);
    inferd_free(before);
    inferd_free(after);
    return delta;
}

/* The asserts on llama_chat_format_single at the end of llama.cpp
 * c392e5094's tests/test-chat-template.cpp (incremental chat, and
 * conversations that are a single system message). */
static void test_chat_render_format_single(void **state)
{
    (void)state;
    static const struct {
        const char *name, *sys, *single;
    } cases[] = {
        {"chatml", "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n",
         "\n<|im_start|>user\nHow are you<|im_end|>\n<|im_start|>assistant\n"},
        {"mistral-v1", " [INST] You are a helpful assistant\n\n", " [INST] How are you [/INST]"},
        {"mistral-v3", "[INST] You are a helpful assistant\n\n", "[INST] How are you[/INST]"},
        {"mistral-v3-tekken", "[INST]You are a helpful assistant\n\n", "[INST]How are you[/INST]"},
        {"mistral-v7", "[SYSTEM_PROMPT] You are a helpful assistant[/SYSTEM_PROMPT]",
         "[INST] How are you[/INST]"},
        {"llama2", "[INST] You are a helpful assistant\n", "[INST] How are you [/INST]"},
        {"llama2-sys", "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\n", NULL},
        {"mistral", "[INST] You are a helpful assistant\n", "[INST] How are you [/INST]"},
        {"gemma", "", "\n<start_of_turn>user\nHow are you<end_of_turn>\n<start_of_turn>model\n"},
        {"llama3",
         "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful "
         "assistant<|eot_id|>",
         "<|start_header_id|>user<|end_header_id|>\n\nHow are "
         "you<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
    };
    const inferd_chat_message sys = {"system", "You are a helpful assistant"};
    const inferd_chat_message history[] = {
        {"system", "You are a helpful assistant"},
        {"user", "Hello"},
        {"assistant", "I am assistant"},
    };
    const inferd_chat_message next = {"user", "How are you"};

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        inferd_chat_template t = parse_ok(cases[i].name);
        char *got = format_single(t, NULL, 0, sys, false);
        if (strcmp(got, cases[i].sys) != 0)
            fail_msg("fmt_sys(%s): expected [%s] got [%s]", cases[i].name, cases[i].sys, got);
        free(got);
        if (!cases[i].single)
            continue;
        got = format_single(t, history, 3, next, true);
        if (strcmp(got, cases[i].single) != 0)
            fail_msg("fmt_single(%s): expected [%s] got [%s]", cases[i].name, cases[i].single, got);
        free(got);
    }
}

/* ---- detection ------------------------------------------------------------ */

/* Every real template source in tests/fixtures/chat/ is recognised as
 * recorded in expected.json, and renders as llama.cpp renders it. */
static void test_chat_detect_fixtures(void **state)
{
    (void)state;
    json_t *j = load_expected();
    json_t *fixtures = json_object_get(j, "fixtures");
    size_t i;
    json_t *e;
    bool family_seen[INFERD_CHAT_FAMILY_COUNT] = {0};
    int n_unknown = 0;

    assert_true(json_array_size(fixtures) > 0);
    json_array_foreach (fixtures, i, e) {
        const char *file = json_string_value(json_object_get(e, "file"));
        json_t *want = json_object_get(e, "template");
        char path[512];
        char *src;
        inferd_chat_template t = (inferd_chat_template)99;
        int rc;

        snprintf(path, sizeof(path), "%s/chat/%s", INFERD_FIXTURES, file);
        src = read_text(path);
        rc = inferd_chat_template_detect(src, &t);
        if (json_is_null(want)) {
            if (rc != INFERD_E_NOT_FOUND)
                fail_msg("%s: expected not recognised, got rc %d (%s)", file, rc,
                         inferd_chat_template_name(t));
            assert_int_equal(t, 99); /* untouched */
            n_unknown++;
        } else {
            inferd_chat_template w = parse_ok(json_string_value(want));
            if (rc != 0 || t != w)
                fail_msg("%s: expected %s, got rc %d (%s)", file, inferd_chat_template_name(w), rc,
                         rc == 0 ? inferd_chat_template_name(t) : "-");
            family_seen[inferd_chat_template_family(t)] = true;
            check_render(t, conversation, N_CONV, true,
                         json_string_value(json_object_get(e, "prompt_gen")));
            check_render(t, conversation, N_CONV, false,
                         json_string_value(json_object_get(e, "prompt_nogen")));
        }
        free(src);
    }
    for (i = 0; i < INFERD_CHAT_FAMILY_COUNT; i++)
        if (!family_seen[i])
            fail_msg("no fixture detects as family %s",
                     inferd_chat_template_name((inferd_chat_template)i));
    assert_true(n_unknown > 0);
    json_decref(j);
}

/* A source that is a template name (llama.cpp accepts those in the GGUF key
 * too), and sources that are not templates at all. */
static void test_chat_detect_names_and_unknown(void **state)
{
    (void)state;
    inferd_chat_template t;

    for (int i = 0; i < INFERD_CHAT_TEMPLATE_COUNT; i++) {
        t = (inferd_chat_template)99;
        assert_int_equal(
            inferd_chat_template_detect(inferd_chat_template_name((inferd_chat_template)i), &t), 0);
        assert_int_equal(t, i);
    }
    assert_int_equal(inferd_chat_template_detect("llama2-sys-bos", &t), 0);
    assert_int_equal(t, INFERD_CHAT_LLAMA2_SYS_BOS);

    t = (inferd_chat_template)99;
    assert_int_equal(inferd_chat_template_detect(NULL, &t), INFERD_E_NOT_FOUND);
    assert_int_equal(inferd_chat_template_detect("", &t), INFERD_E_NOT_FOUND);
    assert_int_equal(inferd_chat_template_detect("{% for message in messages %}{{ message['"
                                                 "content'] }}{% endfor %}",
                                                 &t),
                     INFERD_E_NOT_FOUND);
    /* llama.cpp's names of templates inferd does not render. */
    assert_int_equal(inferd_chat_template_detect("vicuna", &t), INFERD_E_NOT_FOUND);
    assert_int_equal(inferd_chat_template_detect("phi4", &t), INFERD_E_NOT_FOUND);
    assert_int_equal(t, 99);
}

/* ---- names ------------------------------------------------------------------ */

static void test_chat_name_parse(void **state)
{
    (void)state;
    static const char *const names[INFERD_CHAT_TEMPLATE_COUNT] = {
        "chatml",     "llama-2",    "llama-3",           "zephyr",          "phi-3",
        "mistral",    "gemma",      "llama-2-sys",       "llama-2-sys-bos", "llama-2-sys-strip",
        "mistral-v1", "mistral-v3", "mistral-v3-tekken", "mistral-v7",
    };
    inferd_chat_template t;

    for (int i = 0; i < INFERD_CHAT_TEMPLATE_COUNT; i++) {
        assert_string_equal(inferd_chat_template_name((inferd_chat_template)i), names[i]);
        t = (inferd_chat_template)99;
        assert_int_equal(inferd_chat_template_parse(names[i], &t), 0);
        assert_int_equal(t, i);
    }
    assert_string_equal(inferd_chat_template_name((inferd_chat_template)-1), "unknown");
    assert_string_equal(inferd_chat_template_name(INFERD_CHAT_TEMPLATE_COUNT), "unknown");

    /* llama.cpp's spellings. */
    assert_int_equal(inferd_chat_template_parse("llama2", &t), 0);
    assert_int_equal(t, INFERD_CHAT_LLAMA2);
    assert_int_equal(inferd_chat_template_parse("llama2-sys-strip", &t), 0);
    assert_int_equal(t, INFERD_CHAT_LLAMA2_SYS_STRIP);
    assert_int_equal(inferd_chat_template_parse("llama3", &t), 0);
    assert_int_equal(t, INFERD_CHAT_LLAMA3);
    assert_int_equal(inferd_chat_template_parse("phi3", &t), 0);
    assert_int_equal(t, INFERD_CHAT_PHI3);

    t = (inferd_chat_template)99;
    assert_int_equal(inferd_chat_template_parse("nope", &t), INFERD_E_INVALID);
    assert_int_equal(inferd_chat_template_parse("", &t), INFERD_E_INVALID);
    assert_int_equal(inferd_chat_template_parse(NULL, &t), INFERD_E_INVALID);
    assert_int_equal(inferd_chat_template_parse("ChatML", &t), INFERD_E_INVALID);
    assert_int_equal(inferd_chat_template_parse("chatml ", &t), INFERD_E_INVALID);
    assert_int_equal(t, 99);

    /* Families. */
    for (int i = 0; i < INFERD_CHAT_FAMILY_COUNT; i++)
        assert_int_equal(inferd_chat_template_family((inferd_chat_template)i), i);
    assert_int_equal(inferd_chat_template_family(INFERD_CHAT_LLAMA2_SYS), INFERD_CHAT_LLAMA2);
    assert_int_equal(inferd_chat_template_family(INFERD_CHAT_LLAMA2_SYS_BOS), INFERD_CHAT_LLAMA2);
    assert_int_equal(inferd_chat_template_family(INFERD_CHAT_LLAMA2_SYS_STRIP), INFERD_CHAT_LLAMA2);
    assert_int_equal(inferd_chat_template_family(INFERD_CHAT_MISTRAL_V1), INFERD_CHAT_MISTRAL);
    assert_int_equal(inferd_chat_template_family(INFERD_CHAT_MISTRAL_V3), INFERD_CHAT_MISTRAL);
    assert_int_equal(inferd_chat_template_family(INFERD_CHAT_MISTRAL_V3_TEKKEN),
                     INFERD_CHAT_MISTRAL);
    assert_int_equal(inferd_chat_template_family(INFERD_CHAT_MISTRAL_V7), INFERD_CHAT_MISTRAL);
}

/* ---- bad input ------------------------------------------------------------- */

static void expect_invalid(inferd_chat_template t, const inferd_chat_message *m, size_t n,
                           const char *msg)
{
    inferd_error err = {0};
    char *out = (char *)"untouched";
    size_t len = 777;
    assert_int_equal(inferd_chat_render(t, m, n, true, &out, &len, &err), INFERD_E_INVALID);
    assert_int_equal(err.code, INFERD_E_INVALID);
    assert_string_equal(err.msg, msg);
    assert_string_equal(out, "untouched");
    assert_int_equal(len, 777);
    /* err may be NULL. */
    assert_int_equal(inferd_chat_render(t, m, n, true, &out, &len, NULL), INFERD_E_INVALID);
}

static void test_chat_render_bad_input(void **state)
{
    (void)state;
    const inferd_chat_message tool[] = {
        {"system", "s"}, {"user", "u"}, {"tool", "t"}, {"user", "u"}};
    const inferd_chat_message null_role[] = {{"user", "u"}, {NULL, "x"}};
    const inferd_chat_message null_content[] = {{"user", "u"}, {"assistant", NULL}};
    const inferd_chat_message empty_role[] = {{"", "x"}};
    const inferd_chat_message case_role[] = {{"User", "x"}};
    const inferd_chat_message odd_role[] = {{"a'b\\c\n\xc3\xa9", "x"}};
    const inferd_chat_message long_role[] = {{"0123456789abcdef0123456789abcdefXYZ", "x"}};

    expect_invalid(INFERD_CHAT_CHATML, tool, 4,
                   "messages[2].role: unknown role 'tool' (expected system, user or assistant)");
    /* Every template validates the same way, also those that ignore roles. */
    for (int t = 0; t < INFERD_CHAT_TEMPLATE_COUNT; t++)
        expect_invalid((inferd_chat_template)t, tool, 4,
                       "messages[2].role: unknown role 'tool' (expected system, user or "
                       "assistant)");
    expect_invalid(INFERD_CHAT_LLAMA3, null_role, 2,
                   "messages[1].role: missing (expected system, user or assistant)");
    expect_invalid(INFERD_CHAT_GEMMA, null_content, 2, "messages[1].content: missing");
    expect_invalid(INFERD_CHAT_CHATML, empty_role, 1,
                   "messages[0].role: unknown role '' (expected system, user or assistant)");
    expect_invalid(INFERD_CHAT_CHATML, case_role, 1,
                   "messages[0].role: unknown role 'User' (expected system, user or assistant)");
    expect_invalid(INFERD_CHAT_CHATML, odd_role, 1,
                   "messages[0].role: unknown role 'a\\x27b\\x5cc\\x0a\\xc3\\xa9' (expected "
                   "system, user or assistant)");
    expect_invalid(INFERD_CHAT_CHATML, long_role, 1,
                   "messages[0].role: unknown role '0123456789abcdef0123456789abcdef...' "
                   "(expected system, user or assistant)");
    expect_invalid(INFERD_CHAT_CHATML, conversation, 0,
                   "messages: empty (at least one message is required)");
    expect_invalid(INFERD_CHAT_CHATML, NULL, 0,
                   "messages: empty (at least one message is required)");
    expect_invalid(INFERD_CHAT_CHATML, NULL, 2, "messages: NULL array of 2 messages");
    expect_invalid((inferd_chat_template)INFERD_CHAT_TEMPLATE_COUNT, conversation, N_CONV,
                   "chat template 14: out of range");
    expect_invalid((inferd_chat_template)-1, conversation, N_CONV,
                   "chat template -1: out of range");
}

/* ---- edge cases, against llama.cpp's renderer ------------------------------ */

/* Each expected text below is what llama_chat_apply_template of libllama
 * c392e5094 gives for the same messages and template name. */
static void test_chat_render_edges(void **state)
{
    (void)state;
    /* Gemma: a system message waits for the next user turn, past an
     * assistant turn; a trailing one is dropped (llama.cpp's gemma renderer
     * keeps it pending and never writes it). */
    const inferd_chat_message g[] = {
        {"system", "  S1  "}, {"assistant", "A"}, {"user", " U "}, {"system", "S2"}};
    check_render(
        INFERD_CHAT_GEMMA, g, 4, false,
        "<start_of_turn>model\nA<end_of_turn>\n<start_of_turn>user\nS1\n\nU<end_of_turn>\n");
    /* A conversation that starts with the assistant still opens with
     * "[INST] " in llama-2 style. */
    const inferd_chat_message a[] = {{"assistant", "A"}, {"user", "U"}};
    check_render(INFERD_CHAT_LLAMA2, a, 2, true, "[INST] A</s>[INST] U [/INST]");
    /* Empty contents, and marker text inside a message is copied as is. */
    const inferd_chat_message e[] = {{"user", ""}, {"assistant", "<|im_end|>"}};
    check_render(INFERD_CHAT_CHATML, e, 2, true,
                 "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n<|im_end|><|im_end|>\n"
                 "<|im_start|>assistant\n");
    /* Trimming is ASCII whitespace only, as llama.cpp's trim in the C locale:
     * a UTF-8 no-break space (C2 A0) stays. */
    const inferd_chat_message u[] = {{"user", "\t\r\n\v\f \xc2\xa0x\xc2\xa0 \n"}};
    check_render(INFERD_CHAT_LLAMA3, u, 1, false,
                 "<|start_header_id|>user<|end_header_id|>\n\n\xc2\xa0x\xc2\xa0<|eot_id|>");
    /* A message of only whitespace trims to nothing. */
    const inferd_chat_message w[] = {{"user", " \n "}};
    check_render(INFERD_CHAT_GEMMA, w, 1, true,
                 "<start_of_turn>user\n<end_of_turn>\n<start_of_turn>model\n");
}

/* A big conversation: the measured length is the written length. */
static void test_chat_render_large(void **state)
{
    (void)state;
    enum { N = 300, LEN = 5000 };
    inferd_chat_message *m = calloc(N, sizeof(*m));
    char *text = malloc(LEN + 1);
    assert_non_null(m);
    assert_non_null(text);
    for (int i = 0; i < LEN; i++)
        text[i] = (char)('a' + i % 26);
    text[LEN] = '\0';
    for (int i = 0; i < N; i++) {
        m[i].role = i == 0 ? "system" : (i % 2 ? "user" : "assistant");
        m[i].content = text;
    }
    for (int t = 0; t < INFERD_CHAT_TEMPLATE_COUNT; t++) {
        inferd_error err = {0};
        char *out = NULL;
        size_t len = 0;
        assert_int_equal(inferd_chat_render((inferd_chat_template)t, m, N, true, &out, &len, &err),
                         0);
        assert_int_equal(strlen(out), len);
        assert_true(len >= (size_t)(N - 1) * LEN); /* gemma folds in the system text */
        inferd_free(out);
    }
    free(text);
    free(m);
}

/* With the Nth allocation failing, render fails cleanly with NOMEM and
 * leaves the outputs alone. */
static void test_chat_render_alloc_failure(void **state)
{
    (void)state;
    inferd_error err = {0};
    char *out = (char *)"untouched";
    size_t len = 777;

    inferd_alloc_fail_after(1);
    int rc = inferd_chat_render(INFERD_CHAT_CHATML, conversation, N_CONV, true, &out, &len, &err);
    inferd_alloc_fail_after(0);
    assert_int_equal(rc, INFERD_E_NOMEM);
    assert_int_equal(err.code, INFERD_E_NOMEM);
    assert_string_equal(out, "untouched");
    assert_int_equal(len, 777);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chat_render_chatml),
        cmocka_unit_test(test_chat_render_llama2),
        cmocka_unit_test(test_chat_render_llama3),
        cmocka_unit_test(test_chat_render_zephyr),
        cmocka_unit_test(test_chat_render_phi3),
        cmocka_unit_test(test_chat_render_mistral),
        cmocka_unit_test(test_chat_render_gemma),
        cmocka_unit_test(test_chat_render_llama2_sys),
        cmocka_unit_test(test_chat_render_llama2_sys_bos),
        cmocka_unit_test(test_chat_render_llama2_sys_strip),
        cmocka_unit_test(test_chat_render_mistral_v1),
        cmocka_unit_test(test_chat_render_mistral_v3),
        cmocka_unit_test(test_chat_render_mistral_v3_tekken),
        cmocka_unit_test(test_chat_render_mistral_v7),
        cmocka_unit_test(test_chat_render_no_generation_prompt),
        cmocka_unit_test(test_chat_render_all_recorded),
        cmocka_unit_test(test_chat_render_format_single),
        cmocka_unit_test(test_chat_detect_fixtures),
        cmocka_unit_test(test_chat_detect_names_and_unknown),
        cmocka_unit_test(test_chat_name_parse),
        cmocka_unit_test(test_chat_render_bad_input),
        cmocka_unit_test(test_chat_render_edges),
        cmocka_unit_test(test_chat_render_large),
        cmocka_unit_test(test_chat_render_alloc_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
