/* The resilient client against two real workers (run by
 * tests/integration/test_client_failover.sh, which starts them):
 *   1. a 200-token stream from worker A; at piece 100 A is killed (-9):
 *      the call fails over to B, replays and skips the 100 pieces, and
 *      the text equals `inferd generate`'s for the seed, no piece lost or
 *      repeated; A's breaker is open;
 *   2. A comes back (the script restarts it on the same port when it sees
 *      $STATE_DIR/a-killed, and writes $STATE_DIR/a-back): after the
 *      cooldown a call probes it and its breaker closes;
 *   3. a worker answering 400 is not retried;
 *   4. with every worker down, the breakers open after 2 failures in a row
 *      and a call keeps its deadline.
 * Environment: URL_A, URL_B, PID_A, GEN_TEXT (200 tokens, seed 7, the
 * sampling of inferd generate), STATE_DIR, DEAD_A, DEAD_B (no worker). */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "inferd/client.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

typedef struct stream {
    pid_t kill_pid;
    uint32_t kill_at, n;
    bool order_ok;
    char text[65536];
    size_t len;
} stream;

static int on_piece(void *ctx, uint32_t index, const char *t, size_t len)
{
    stream *s = ctx;
    if (index != s->n)
        s->order_ok = false;
    s->n++;
    if (s->len + len < sizeof(s->text)) {
        memcpy(s->text + s->len, t, len);
        s->len += len;
    }
    if (s->kill_pid && s->n == s->kill_at) {
        kill(s->kill_pid, SIGKILL);
        s->kill_pid = 0;
    }
    return 0;
}

static inferd_client_gen story(int n)
{
    inferd_client_gen g = inferd_client_gen_default();
    g.prompt = "Once upon a time";
    g.max_tokens = n;
    g.temperature = 0.8;
    g.top_k = 40;
    g.top_p = 0.95;
    g.min_p = 0.05;
    g.has_seed = true;
    g.seed = 7;
    return g;
}

static inferd_endpoint_stats ep(inferd_resilient *r, size_t i)
{
    inferd_endpoint_stats s;
    inferd_resilient_endpoint(r, i, &s);
    return s;
}

int main(void)
{
    const char *urls[2] = {env("URL_A"), env("URL_B")};
    inferd_resilient_opts o = inferd_resilient_opts_default();
    o.breaker_failures = 1;
    o.breaker_cooldown_ms = 5000; /* open through the replay on B */
    o.retry.backoff_base_ms = 20;
    o.retry.backoff_cap_ms = 200;
    o.jitter_seed = 1;
    o.retry.deadline_ms = 0; /* no deadline here: sanitizer builds are slow (part 4 has one) */
    inferd_resilient *r = NULL;
    inferd_error e = {0};
    CHECK(inferd_resilient_open(urls, 2, &o, &r, &e) == 0, "open: %s", e.msg);

    /* 1. Kill A halfway through a 200-token stream. */
    const char *want = env("GEN_TEXT");
    stream s = {.kill_pid = (pid_t)atol(env("PID_A")), .kill_at = 100, .order_ok = true};
    inferd_client_gen g = story(200);
    inferd_client_result res;
    int rc = inferd_resilient_complete(r, &g, on_piece, &s, &res, &e);
    CHECK(rc == 0, "the stream through a failover: %d %s", rc, e.msg);
    CHECK(s.kill_pid == 0, "A was not killed: the stream had %u pieces", s.n);
    CHECK(s.len == strlen(want) && memcmp(s.text, want, s.len) == 0,
          "the text after the failover differs from inferd generate's:\n got '%.*s'\nwant '%s'",
          (int)s.len, s.text, want);
    CHECK(res.text_len == s.len && memcmp(res.text, s.text, s.len) == 0 && s.order_ok &&
              res.n_pieces == s.n && res.completion_tokens == 200 &&
              strcmp(res.finish_reason, "length") == 0 && res.seed == 7,
          "the result: %u pieces (%u delivered), %u tokens, finish '%s'", res.n_pieces, s.n,
          res.completion_tokens, res.finish_reason);
    inferd_client_result_free(&res);
    inferd_resilient_stats st;
    inferd_resilient_stats_get(r, &st);
    CHECK(st.failovers == 1 && st.attempts == 2 && st.replayed >= 100,
          "stats: %llu attempts, %llu failovers, %llu replayed", (unsigned long long)st.attempts,
          (unsigned long long)st.failovers, (unsigned long long)st.replayed);
    /* Open, or half-open when the replay outlasted the cooldown (slow
     * builds): it opened once. */
    CHECK(ep(r, 0).breaker != INFERD_BREAKER_CLOSED && ep(r, 0).opened == 1 &&
              ep(r, 0).failures == 1 && ep(r, 1).breaker == INFERD_BREAKER_CLOSED &&
              ep(r, 1).successes == 1,
          "breakers: A %s, B %s", inferd_breaker_state_name(ep(r, 0).breaker),
          inferd_breaker_state_name(ep(r, 1).breaker));
    printf("failover: A killed at piece 100 of 200, B replayed %llu pieces, the text is "
           "inferd generate's; A's breaker is open\n",
           (unsigned long long)st.replayed);

    /* While A is down, calls are served (by B; a probe of A after its
     * cooldown fails over). */
    g = story(4);
    for (int i = 0; i < 3; i++) {
        CHECK(inferd_resilient_complete(r, &g, NULL, NULL, &res, &e) == 0, "while A is down: %s",
              e.msg);
        inferd_client_result_free(&res);
    }
    CHECK(ep(r, 0).successes == 0 && ep(r, 0).breaker != INFERD_BREAKER_CLOSED,
          "A served while it was down");

    /* 2. A comes back: a probe closes its breaker. */
    char path[512];
    snprintf(path, sizeof(path), "%s/a-killed", env("STATE_DIR"));
    FILE *f = fopen(path, "w");
    CHECK(f, "cannot write %s", path);
    fclose(f);
    snprintf(path, sizeof(path), "%s/a-back", env("STATE_DIR"));
    struct stat sb;
    for (int i = 0; stat(path, &sb) != 0; i++) {
        CHECK(i < 1200, "A did not come back within 120 s");
        usleep(100000);
    }
    usleep(5100000); /* the cooldown */
    for (int i = 0; ep(r, 0).breaker != INFERD_BREAKER_CLOSED; i++) {
        CHECK(i < 20, "A's breaker did not close: %s", inferd_breaker_state_name(ep(r, 0).breaker));
        CHECK(inferd_resilient_complete(r, &g, NULL, NULL, &res, &e) == 0, "after A came back: %s",
              e.msg);
        inferd_client_result_free(&res);
    }
    CHECK(ep(r, 0).successes >= 1, "A served nothing after it came back");
    printf("A came back: a probe closed its breaker\n");

    /* 3. A 400 is the request's fault: not retried. */
    inferd_resilient_stats_get(r, &st);
    g.temperature = 9;
    rc = inferd_resilient_complete(r, &g, NULL, NULL, &res, &e);
    inferd_client_result_free(&res);
    inferd_resilient_stats st2;
    inferd_resilient_stats_get(r, &st2);
    CHECK(rc == INFERD_E_INVALID && strstr(e.msg, "temperature") &&
              st2.attempts == st.attempts + 1 && st2.failovers == st.failovers,
          "a 400: rc %d (%s), %llu more attempts", rc, e.msg,
          (unsigned long long)(st2.attempts - st.attempts));
    CHECK(ep(r, 0).breaker == INFERD_BREAKER_CLOSED && ep(r, 1).breaker == INFERD_BREAKER_CLOSED,
          "a 400 moved a breaker");
    printf("a 400 is not retried\n");
    inferd_resilient_close(r);

    /* 4. Every worker down: breakers open after 2 failures in a row, and a
     * call keeps its deadline. */
    const char *dead[2] = {env("DEAD_A"), env("DEAD_B")};
    o.breaker_failures = 2;
    o.breaker_cooldown_ms = 100000;
    o.retry.attempts = 1;
    CHECK(inferd_resilient_open(dead, 2, &o, &r, &e) == 0, "open: %s", e.msg);
    g = story(4);
    for (int call = 0; call < 4; call++) {
        rc = inferd_resilient_complete(r, &g, NULL, NULL, &res, &e);
        inferd_client_result_free(&res);
        CHECK(rc == INFERD_E_TRANSPORT, "a dead worker: %d %s", rc, e.msg);
        /* calls 0, 2 go to A; 1, 3 to B: each opens at its second failure */
        const inferd_breaker_state want_st =
            call >= 2 ? INFERD_BREAKER_OPEN : INFERD_BREAKER_CLOSED;
        CHECK(ep(r, (size_t)call % 2).breaker == want_st &&
                  ep(r, (size_t)call % 2).failures_in_row == (uint32_t)(call / 2 + 1),
              "call %d: breaker %s, %u in a row", call,
              inferd_breaker_state_name(ep(r, (size_t)call % 2).breaker),
              ep(r, (size_t)call % 2).failures_in_row);
    }
    rc = inferd_resilient_complete(r, &g, NULL, NULL, &res, &e);
    inferd_client_result_free(&res);
    CHECK(rc == INFERD_E_UNAVAILABLE && strstr(e.msg, "breaker is open"),
          "every breaker open: %d %s", rc, e.msg);
    inferd_resilient_close(r);
    o.breaker_cooldown_ms = 50;
    o.retry.attempts = 1000000;
    o.retry.deadline_ms = 800;
    CHECK(inferd_resilient_open(dead, 2, &o, &r, &e) == 0, "open: %s", e.msg);
    const double t0 = now_ms();
    rc = inferd_resilient_complete(r, &g, NULL, NULL, &res, &e);
    const double took = now_ms() - t0;
    inferd_client_result_free(&res);
    CHECK(rc == INFERD_E_TIMEOUT && strstr(e.msg, "deadline of 800 ms passed") &&
              strstr(e.msg, "last:"),
          "every worker down: %d %s", rc, e.msg);
    /* Kept: not returned before it, nor long after (one backoff, 200 ms). */
    CHECK(took >= 790 && took < 800 + 2000, "the deadline of 800 ms took %.0f ms", took);
    inferd_resilient_stats_get(r, &st);
    CHECK(st.attempts >= 2, "%llu attempts before the deadline", (unsigned long long)st.attempts);
    inferd_resilient_close(r);
    printf("every worker down: breakers open after 2 failures, the deadline of 800 ms kept "
           "(%.0f ms, %llu attempts)\n",
           took, (unsigned long long)st.attempts);
    return 0;
}
