/* Single-sequence generation: prefill in chunks (logits for the last prompt
 * token only), then one token per forward call. Text passes through the
 * streaming detokenizer (whole UTF-8 characters) and the stop-string
 * matcher before reaching the caller. Buffers are allocated per call. */
#include "inferd/generate.h"

#include <string.h>

#include "inferd/alloc.h"
#include "inferd/buf.h"
#include "inferd/clock.h"

inferd_gen_params inferd_gen_params_default(void)
{
    inferd_gen_params p;
    memset(&p, 0, sizeof(p));
    p.sampling = inferd_sampler_params_default();
    p.n_predict = 128;
    return p;
}

#define GENERATE_TEXT_MAX ((size_t)64 << 20) /* the result's text */

typedef struct emitter {
    inferd_stopper *stopper;
    inferd_buf text; /* the result, bounded by GENERATE_TEXT_MAX */
    inferd_gen_text_fn on_text;
    void *ctx;
    bool stopped;   /* a stop string matched */
    bool cancelled; /* the callback asked to stop */
    char *buf;      /* stopper output, (buf_cap) */
    size_t buf_cap;
} emitter;

/* Pass detokenized bytes through the stop matcher to the result and the
 * callback. */
static int emit(emitter *e, const char *s, size_t n)
{
    size_t out_n = s ? n : 0;
    bool stopped = false;
    if (e->stopper) {
        out_n = s ? inferd_stopper_push(e->stopper, s, n, e->buf, e->buf_cap, &stopped)
                  : inferd_stopper_flush(e->stopper, e->buf, e->buf_cap);
        s = e->buf;
    }
    if (out_n > 0) {
        if (inferd_buf_add(&e->text, s, out_n) != 0)
            return e->text.err; /* the caller reports the limit */
        if (e->on_text && e->on_text(e->ctx, s, out_n))
            e->cancelled = true;
    }
    if (stopped)
        e->stopped = true;
    return 0;
}

int inferd_generate(inferd_model *m, inferd_pool *pool, const int32_t *prompt, size_t n_prompt,
                    const inferd_gen_params *p, inferd_gen_text_fn on_text, void *ctx,
                    inferd_gen_result *out_result, inferd_error *err)
{
    const inferd_vocab *vocab = inferd_model_get_vocab(m);
    const uint32_t n_vocab = inferd_model_get_hparams(m)->n_vocab;
    const uint32_t n_ctx = inferd_model_n_ctx(m);
    uint32_t n_batch = p->n_batch > 0 ? (uint32_t)p->n_batch : inferd_model_n_batch_max(m);
    inferd_sampler *smp = NULL;
    emitter e = {.on_text = on_text, .ctx = ctx, .text = INFERD_BUF_INIT(GENERATE_TEXT_MAX)};
    float *logits = NULL;
    int32_t *ids = NULL, *pos = NULL, *seqs = NULL;
    int8_t *want = NULL, *prefill = NULL;
    inferd_detok detok;
    char *piece = NULL;
    size_t piece_cap = inferd_vocab_max_piece_len(vocab) + 16;
    int rc;

    if (n_batch > inferd_model_n_batch_max(m))
        n_batch = inferd_model_n_batch_max(m);
    if (n_prompt == 0)
        return inferd_fail(err, INFERD_E_RANGE, "generate: the prompt is empty");
    if (n_prompt >= n_ctx)
        return inferd_fail(err, INFERD_E_RANGE,
                           "generate: prompt of %zu tokens does not fit the context of %u",
                           n_prompt, n_ctx);
    if (p->seq < 0 || (uint32_t)p->seq >= inferd_model_n_seq_max(m))
        return inferd_fail(err, INFERD_E_RANGE, "generate: sequence %d out of range", p->seq);
    rc = inferd_sampler_create(&p->sampling, (int32_t)n_vocab, &smp, err);
    if (rc < 0)
        return rc;
    if (p->n_stop > 0) {
        rc = inferd_stopper_create(p->stop, p->n_stop, &e.stopper, err);
        if (rc < 0)
            goto done;
    }
    size_t max_new = n_ctx - n_prompt;
    if (p->n_predict >= 0 && (size_t)p->n_predict < max_new)
        max_new = (size_t)p->n_predict;
    e.buf_cap = piece_cap + 2048; /* a piece plus held-back stop-string text */
    logits = inferd_malloc((size_t)n_vocab * sizeof(float));
    ids = inferd_malloc((max_new + 1) * sizeof(int32_t));
    pos = inferd_malloc((size_t)n_batch * sizeof(int32_t));
    seqs = inferd_malloc((size_t)n_batch * sizeof(int32_t));
    want = inferd_calloc(n_batch, 1);
    prefill = inferd_malloc(n_batch);
    e.buf = inferd_malloc(e.buf_cap);
    piece = inferd_malloc(piece_cap);
    if (!piece || !logits || !ids || !pos || !seqs || !want || !prefill || !e.buf) {
        rc = inferd_fail(err, INFERD_E_NOMEM, "generate: no memory");
        goto done;
    }
    for (uint32_t i = 0; i < n_batch; i++)
        seqs[i] = p->seq;
    memset(prefill, 1, n_batch);

    /* Prefill. */
    const uint64_t t0_ns = inferd_now_ns();
    inferd_model_seq_reset(m, p->seq);
    for (size_t i = 0; i < n_prompt; i += n_batch) {
        uint32_t n = (uint32_t)(n_prompt - i < n_batch ? n_prompt - i : n_batch);
        for (uint32_t j = 0; j < n; j++) {
            pos[j] = (int32_t)(i + j);
            want[j] = (i + j == n_prompt - 1);
        }
        inferd_batch b = {.n_tokens = (int32_t)n,
                          .tokens = prompt + i,
                          .pos = pos,
                          .seq = seqs,
                          .logits = want,
                          .prefill = prefill};
        rc = inferd_model_forward(m, pool, &b, logits, err);
        if (rc < 0)
            goto done;
    }
    const uint64_t t1_ns = inferd_now_ns();

    /* Penalties look back over the prompt too, as llama.cpp's server does. */
    for (size_t i = 0; i < n_prompt; i++)
        inferd_sampler_accept(smp, prompt[i]);

    /* Generation. */
    inferd_detok_init(&detok, vocab);
    size_t n_gen = 0;
    inferd_finish finish = INFERD_FINISH_LENGTH;
    memset(want, 1, 1);
    while (n_gen < max_new) {
        int32_t tok = inferd_sampler_sample(smp, logits);
        if (inferd_vocab_is_eog(vocab, tok)) {
            finish = INFERD_FINISH_EOG;
            break;
        }
        inferd_sampler_accept(smp, tok);
        ids[n_gen++] = tok;
        size_t n = inferd_detok_push(&detok, tok, piece, piece_cap);
        if (n == INFERD_DETOK_ERROR) {
            rc = inferd_fail(err, INFERD_E_INTERNAL, "generate: cannot detokenize id %d", tok);
            goto done;
        }
        if ((rc = emit(&e, piece, n)) < 0)
            goto done;
        if (e.stopped) {
            finish = INFERD_FINISH_STOP;
            break;
        }
        if (e.cancelled || n_gen == max_new)
            break;
        int32_t p0 = (int32_t)(n_prompt + n_gen - 1);
        inferd_batch b = {.n_tokens = 1, .tokens = &tok, .pos = &p0, .seq = seqs, .logits = want};
        rc = inferd_model_forward(m, pool, &b, logits, err);
        if (rc < 0)
            goto done;
    }
    if (!e.stopped) {
        size_t n = inferd_detok_flush(&detok, piece, piece_cap);
        if (n != INFERD_DETOK_ERROR && n > 0 && (rc = emit(&e, piece, n)) < 0)
            goto done;
        if (!e.stopped && (rc = emit(&e, NULL, 0)) < 0)
            goto done;
    }
    const int text_err = e.text.err;
    size_t text_len = 0;
    char *text = inferd_buf_take(&e.text, &text_len);
    if (!text) {
        rc = text_err ? text_err : INFERD_E_NOMEM;
        goto done;
    }

    out_result->ids = ids;
    ids = NULL;
    out_result->n_ids = n_gen;
    out_result->text = text;
    out_result->text_len = text_len;
    out_result->seed = inferd_sampler_seed(smp);
    out_result->finish = e.stopped ? INFERD_FINISH_STOP : finish;
    out_result->prompt_ms = (double)(t1_ns - t0_ns) / 1e6;
    out_result->gen_ms = (double)(inferd_now_ns() - t1_ns) / 1e6;
    rc = 0;

done:
    if (rc == INFERD_E_NOMEM && err && err->code == 0)
        inferd_fail(err, INFERD_E_NOMEM, "generate: no memory");
    if (rc == INFERD_E_RANGE && err && err->code == 0)
        inferd_fail(err, INFERD_E_RANGE, "generate: the text is over %zu bytes", GENERATE_TEXT_MAX);
    inferd_buf_free(&e.text);
    inferd_free(e.buf);
    inferd_free(piece);
    inferd_free(want);
    inferd_free(prefill);
    inferd_free(seqs);
    inferd_free(pos);
    inferd_free(ids);
    inferd_free(logits);
    inferd_stopper_destroy(e.stopper);
    inferd_sampler_destroy(smp);
    return rc;
}

void inferd_gen_result_fini(inferd_gen_result *r)
{
    if (!r)
        return;
    inferd_free(r->ids);
    inferd_free(r->text);
    memset(r, 0, sizeof(*r));
}
