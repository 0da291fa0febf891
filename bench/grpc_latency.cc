/* inferd-grpc-latency: latency of one request at a time over inferd's gRPC
 * door (inference.GRPCInferenceService, proto/grpc_service.proto), the
 * counterpart of inferd-nats-latency for HTTP and NATS. Two phases, each
 * after its own warm-up, on one insecure channel and gRPC's synchronous API:
 * round trip of a 1-token greedy ModelInfer (text_input BYTES [1] in
 * raw_input_contents; parameters max_tokens 1, temperature 0), then time to
 * the first token of ModelStreamInfer (max_tokens --max-tokens): every
 * request goes on ONE long-lived bidi stream, opened before the warm-up, as
 * a client that keeps its stream would; the time runs from the Write of the
 * request to the return of the Read of its first response, and the rest of
 * its responses (up to the one whose triton_final_response is true) are read
 * before the next request is written. With --new-stream, each request opens
 * its own stream instead, and the time runs from opening it. A watchdog
 * thread cancels a call that runs past --timeout-ms (no deadline is sent, so
 * the server sees the same request as without one). Times are taken when a
 * call or a Read returns (gRPC has parsed the message by then). Usage:
 * --help. */
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cinttypes>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "grpc_service.grpc.pb.h"

extern "C" {
#include "bench_util.h"
}

#define PROG "inferd-grpc-latency"
#define usage_error(...) bench_usage_error(PROG, __VA_ARGS__)
#define fail(...) bench_error(-1, PROG, __VA_ARGS__)

namespace pb = inference;

namespace
{

const uint64_t REQUESTS_MAX = 10000000u; /* per phase; every sample is kept */
const int64_t NS_PER_MS = 1000000;
const int64_t NS_PER_US = 1000;
const int64_t NS_PER_S = 1000000000;

const char usage_text[] =
    "usage: " PROG " --port PORT [options]\n"
    "\n"
    "Sends one request at a time to inferd's gRPC door (inferd serve --grpc-port)\n"
    "and prints mean, p50 and p99 in microseconds of:\n"
    "  grpc_rtt   ModelInfer of a max_tokens 1, temperature 0 request, call to return\n"
    "  grpc_ttft  ModelStreamInfer (max_tokens --max-tokens): Write of the request to\n"
    "             the Read of its first response, all requests on one stream\n"
    "\n"
    "  --host HOST         the door's host (default 127.0.0.1)\n"
    "  --port PORT         the door's port (inferd logs `gRPC on HOST:PORT`)\n"
    "  --model NAME        model_name of each request (default: empty, the server's\n"
    "                      default model)\n"
    "  -n, --requests N    measured requests per row, 1..10000000 (default 1000)\n"
    "  --warmup N          unmeasured requests before each row (default 100)\n"
    "  --max-tokens N      tokens of the first-token requests, 1..100000 (default 32)\n"
    "  --prompt TEXT       the prompt (default \"Once upon a time\")\n"
    "  --new-stream        grpc_ttft: a new stream per request, timed from its opening\n"
    "  --timeout-ms MS     limit for one request (default 30000)\n"
    "  --help              this text\n"
    "\n"
    "Percentiles are nearest-rank. Exit status: 0 when every request succeeded,\n"
    "1 on a failed request or connection, 2 on a usage error.\n";

struct options {
    std::string host = "127.0.0.1";
    uint64_t port = 0;
    std::string model;
    std::string prompt = "Once upon a time";
    uint64_t n_requests = 1000;
    uint64_t n_warmup = 100;
    uint64_t max_tokens = 32;
    bool new_stream = false;
    int64_t timeout_ns = 30 * NS_PER_S;
};

/* ---------------------------------------------------------------- options */

void parse_args(int argc, char **argv, options *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = nullptr, *eq = nullptr;
        std::string name;
        uint64_t v;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage_text, stdout);
            exit(0);
        }
        if (a[0] != '-')
            usage_error("unexpected argument '%s'", a);
        if (strcmp(a, "--new-stream") == 0) {
            o->new_stream = true;
            continue;
        }
        /* "--name=value" and "--name value" are both accepted. */
        eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : nullptr;
        if (eq) {
            name.assign(a, (size_t)(eq - a));
            val = eq + 1;
        } else {
            name = a;
            if (i + 1 >= argc)
                usage_error("%s needs a value", a);
            val = argv[++i];
        }
        if (name == "--host") {
            o->host = val;
        } else if (name == "--port") {
            if (!bench_parse_u64(val, 1, 65535, &o->port))
                usage_error("--port: expected 1..65535, got '%s'", val);
        } else if (name == "--model") {
            o->model = val;
        } else if (name == "--prompt") {
            o->prompt = val;
        } else if (name == "-n" || name == "--requests") {
            if (!bench_parse_u64(val, 1, REQUESTS_MAX, &o->n_requests))
                usage_error("%s: expected 1..%" PRIu64 ", got '%s'", name.c_str(), REQUESTS_MAX,
                            val);
        } else if (name == "--warmup") {
            if (!bench_parse_u64(val, 0, REQUESTS_MAX, &o->n_warmup))
                usage_error("--warmup: expected 0..%" PRIu64 ", got '%s'", REQUESTS_MAX, val);
        } else if (name == "--max-tokens") {
            if (!bench_parse_u64(val, 1, 100000, &o->max_tokens))
                usage_error("--max-tokens: expected 1..100000, got '%s'", val);
        } else if (name == "--timeout-ms") {
            if (!bench_parse_u64(val, 1, 86400000, &v))
                usage_error("--timeout-ms: expected 1..86400000, got '%s'", val);
            o->timeout_ns = (int64_t)v * NS_PER_MS;
        } else {
            usage_error("unknown option '%s'", name.c_str());
        }
    }
    if (o->port == 0)
        usage_error("give --port PORT");
}

/* ---------------------------------------------------------------- samples */

struct samples {
    std::vector<int64_t> v; /* ns */
};

/* Nearest-rank percentile of sorted s, in us. */
double pct_us(const samples &s, unsigned p)
{
    return (double)bench_pct(s.v.data(), s.v.size(), p) / (double)NS_PER_US;
}

void print_row(const char *name, samples &s)
{
    double sum = 0;

    if (s.v.empty())
        return;
    std::sort(s.v.begin(), s.v.end());
    for (int64_t x : s.v)
        sum += (double)x;
    printf("| %s | %zu | %.0f | %.0f | %.0f |\n", name, s.v.size(),
           sum / (double)s.v.size() / NS_PER_US, pct_us(s, 50), pct_us(s, 99));
}

/* ---------------------------------------------------------------- watchdog */

/* Cancels the armed call when its time is up: the synchronous API has no
 * timeout of its own but the call's deadline, which the server would see
 * (and turn into the request's timeout_ms). */
class watchdog
{
  public:
    watchdog() : th_([this] { loop(); }) {}
    ~watchdog()
    {
        {
            std::lock_guard<std::mutex> lk(mu_);
            stop_ = true;
        }
        cv_.notify_one();
        th_.join();
    }
    void arm(grpc::ClientContext *ctx, int64_t limit_ns)
    {
        std::lock_guard<std::mutex> lk(mu_);
        ctx_ = ctx;
        until_ = std::chrono::steady_clock::now() + std::chrono::nanoseconds(limit_ns);
        fired_ = false;
        cv_.notify_one();
    }
    /* Disarm; true when the call was cancelled for its time. */
    bool disarm()
    {
        std::lock_guard<std::mutex> lk(mu_);
        ctx_ = nullptr;
        return fired_;
    }

  private:
    void loop()
    {
        std::unique_lock<std::mutex> lk(mu_);
        while (!stop_) {
            if (!ctx_) {
                cv_.wait(lk);
                continue;
            }
            if (cv_.wait_until(lk, until_) == std::cv_status::timeout && ctx_ &&
                std::chrono::steady_clock::now() >= until_) {
                ctx_->TryCancel();
                ctx_ = nullptr;
                fired_ = true;
            }
        }
    }

    std::mutex mu_;
    std::condition_variable cv_;
    grpc::ClientContext *ctx_ = nullptr;
    std::chrono::steady_clock::time_point until_;
    bool fired_ = false;
    bool stop_ = false;
    std::thread th_;
};

/* ---------------------------------------------------------------- requests */

/* A text request: text_input BYTES [1] as raw contents (4-byte little-endian
 * length, then the UTF-8 bytes), greedy, at most max_tokens tokens. */
pb::ModelInferRequest make_request(const options &o, uint64_t max_tokens)
{
    pb::ModelInferRequest q;
    q.set_model_name(o.model);
    auto &p = *q.mutable_parameters();
    p["max_tokens"].set_int64_param((int64_t)max_tokens);
    p["temperature"].set_double_param(0.0);
    auto *in = q.add_inputs();
    in->set_name("text_input");
    in->set_datatype("BYTES");
    in->add_shape(1);
    const uint32_t n = (uint32_t)o.prompt.size();
    const unsigned char len[4] = {(unsigned char)n, (unsigned char)(n >> 8),
                                  (unsigned char)(n >> 16), (unsigned char)(n >> 24)};
    std::string raw((const char *)len, 4);
    raw += o.prompt;
    q.add_raw_input_contents(std::move(raw));
    return q;
}

bool param_bool(const pb::ModelInferResponse &r, const char *k)
{
    auto it = r.parameters().find(k);
    return it != r.parameters().end() &&
           it->second.parameter_choice_case() == pb::InferParameter::kBoolParam &&
           it->second.bool_param();
}

int64_t param_int(const pb::ModelInferResponse &r, const char *k)
{
    auto it = r.parameters().find(k);
    if (it == r.parameters().end())
        return -1;
    if (it->second.parameter_choice_case() == pb::InferParameter::kInt64Param)
        return it->second.int64_param();
    if (it->second.parameter_choice_case() == pb::InferParameter::kUint64Param)
        return (int64_t)it->second.uint64_param();
    return -1;
}

/* The text of output text_output of @p r (one BYTES element), or -1. */
int64_t text_len(const pb::ModelInferResponse &r)
{
    for (int i = 0; i < r.outputs_size(); i++) {
        if (r.outputs(i).name() != "text_output")
            continue;
        if (i >= r.raw_output_contents_size() || r.raw_output_contents(i).size() < 4)
            return -1;
        const std::string &raw = r.raw_output_contents(i);
        uint32_t n;
        memcpy(&n, raw.data(), 4);
        return n == raw.size() - 4 ? (int64_t)n : -1;
    }
    return -1;
}

std::string status_text(const grpc::Status &st)
{
    return std::to_string((int)st.error_code()) + " " + st.error_message();
}

struct run {
    const options *o;
    std::shared_ptr<grpc::Channel> ch;
    std::unique_ptr<pb::GRPCInferenceService::Stub> client;
    watchdog dog;
    uint64_t seq = 0;
    uint64_t n_empty_first = 0; /* first responses with empty text */
};

/* One ModelInfer; *out_ns is the call's time. */
int infer_once(run &r, pb::ModelInferRequest &q, int64_t *out_ns)
{
    grpc::ClientContext ctx;
    pb::ModelInferResponse resp;

    q.set_id("g." + std::to_string(++r.seq));
    r.dog.arm(&ctx, r.o->timeout_ns);
    const int64_t t0 = bench_now_ns();
    grpc::Status st = r.client->ModelInfer(&ctx, q, &resp);
    const int64_t t = bench_now_ns() - t0;
    if (r.dog.disarm())
        return fail("ModelInfer %s: no response within %" PRId64 " ms", q.id().c_str(),
                    r.o->timeout_ns / NS_PER_MS);
    if (!st.ok())
        return fail("ModelInfer %s: status %s", q.id().c_str(), status_text(st).c_str());
    const int64_t n_tok = param_int(resp, "completion_tokens");
    if (resp.id() != q.id() || text_len(resp) < 0 || n_tok != 1)
        return fail("ModelInfer %s: a response with id '%s', %s text_output, completion_tokens "
                    "%" PRId64,
                    q.id().c_str(), resp.id().c_str(), text_len(resp) < 0 ? "no" : "a", n_tok);
    *out_ns = t;
    return 0;
}

using stream_t = grpc::ClientReaderWriter<pb::ModelInferRequest, pb::ModelStreamInferResponse>;

/* A stream and its context (which must outlive it). */
struct stream {
    std::unique_ptr<grpc::ClientContext> ctx;
    std::unique_ptr<stream_t> s;
};

void stream_open(run &r, stream *st)
{
    st->ctx = std::make_unique<grpc::ClientContext>();
    st->s = r.client->ModelStreamInfer(st->ctx.get());
}

/* Half-close the stream, read what is left, and take its status. */
int stream_close(run &r, stream *st)
{
    pb::ModelStreamInferResponse m;
    int rc = 0;

    if (!st->s)
        return 0;
    r.dog.arm(st->ctx.get(), r.o->timeout_ns);
    st->s->WritesDone();
    while (st->s->Read(&m))
        rc = fail("a response after the last request's final one");
    grpc::Status s = st->s->Finish();
    if (r.dog.disarm())
        rc =
            fail("ModelStreamInfer: the stream did not end within %" PRId64 " ms of its half-close",
                 r.o->timeout_ns / NS_PER_MS);
    else if (!s.ok())
        rc = fail("ModelStreamInfer: stream status %s", status_text(s).c_str());
    st->s.reset();
    st->ctx.reset();
    return rc;
}

/* One request on stream @p st (opened here with --new-stream): Write it,
 * read its responses up to the final one. *out_ns is the first response's
 * time from the Write (from the opening with --new-stream). */
int stream_once(run &r, stream *st, pb::ModelInferRequest &q, int64_t *out_ns)
{
    pb::ModelStreamInferResponse m;
    int64_t t0 = bench_now_ns(), first = -1;
    uint64_t n_tok = 0;
    const char *why = nullptr;
    int rc = 0;

    q.set_id("s." + std::to_string(++r.seq));
    if (r.o->new_stream)
        stream_open(r, st);
    r.dog.arm(st->ctx.get(), r.o->timeout_ns);
    if (!r.o->new_stream)
        t0 = bench_now_ns();
    if (!st->s->Write(q)) {
        why = "the Write failed (stream broken)";
        goto out;
    }
    for (;;) {
        if (!st->s->Read(&m)) {
            why = first < 0 ? "the stream ended before a response"
                            : "the stream ended before the final response";
            goto out;
        }
        const int64_t t = bench_now_ns() - t0;
        const pb::ModelInferResponse &ir = m.infer_response();
        if (!m.error_message().empty()) {
            rc = fail("ModelStreamInfer %s: error response: %s", q.id().c_str(),
                      m.error_message().c_str());
            goto out;
        }
        if (ir.id() != q.id()) {
            rc = fail("ModelStreamInfer %s: a response of request '%s'", q.id().c_str(),
                      ir.id().c_str());
            goto out;
        }
        const bool last = param_bool(ir, "triton_final_response");
        if (first < 0) {
            if (last) {
                rc = fail("ModelStreamInfer %s: the first response is the final one (no token)",
                          q.id().c_str());
                goto out;
            }
            first = t;
            if (text_len(ir) <= 0)
                r.n_empty_first++;
        }
        if (last) {
            const int64_t done = param_int(ir, "completion_tokens");
            if (done < 1 || (uint64_t)done > r.o->max_tokens || (uint64_t)done != n_tok) {
                rc = fail("ModelStreamInfer %s: final response with completion_tokens %" PRId64
                          " after %" PRIu64 " token responses",
                          q.id().c_str(), done, n_tok);
                goto out;
            }
            break;
        }
        n_tok++;
    }
out:
    grpc::Status fin;
    if (why) /* the stream is over: its status says why (the watchdog still runs) */
        fin = st->s->Finish();
    const bool fired = r.dog.disarm();
    if (why)
        st->s.reset();
    if (fired)
        rc = fail("ModelStreamInfer %s: not ended within %" PRId64 " ms (%s)", q.id().c_str(),
                  r.o->timeout_ns / NS_PER_MS,
                  first < 0 ? "no response" : "first response seen, not the final one");
    else if (why)
        rc = fail("ModelStreamInfer %s: %s; stream status %s", q.id().c_str(), why,
                  status_text(fin).c_str());
    if (rc == 0 && r.o->new_stream)
        rc = stream_close(r, st);
    if (rc == 0)
        *out_ns = first;
    return rc;
}

enum row_id { ROW_GRPC_RTT, ROW_GRPC_TTFT, N_ROWS };
const char *const row_names[N_ROWS] = {"grpc_rtt", "grpc_ttft"};

int run_row(run &r, row_id row, samples *out)
{
    const options &o = *r.o;
    const bool ttft = row == ROW_GRPC_TTFT;
    pb::ModelInferRequest q = make_request(o, ttft ? o.max_tokens : 1);
    stream st;
    int rc = 0;

    if (ttft && !o.new_stream)
        stream_open(r, &st);
    out->v.reserve(o.n_requests);
    for (uint64_t i = 0; i < o.n_warmup + o.n_requests; i++) {
        int64_t t;
        rc = ttft ? stream_once(r, &st, q, &t) : infer_once(r, q, &t);
        if (rc < 0)
            break;
        if (i >= o.n_warmup)
            out->v.push_back(t);
    }
    if (st.s) { /* the long-lived stream, or one a failed request left */
        if (rc == 0) {
            rc = stream_close(r, &st);
        } else {
            st.ctx->TryCancel();
            st.s->Finish();
        }
    }
    return rc;
}

} // namespace

int main(int argc, char **argv)
{
    options opt;
    parse_args(argc, argv, &opt);
    std::string prompt_q;
    for (char c : opt.prompt) { /* for the header line only */
        if (c == '"' || c == '\\')
            prompt_q += '\\';
        prompt_q += c;
    }

    const std::string target = opt.host + ":" + std::to_string(opt.port);
    grpc::ChannelArguments args;
    /* Straight to the server, whatever http_proxy says. */
    args.SetInt(GRPC_ARG_ENABLE_HTTP_PROXY, 0);
    run r;
    r.o = &opt;
    r.ch = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
    r.client = pb::GRPCInferenceService::NewStub(r.ch);
    if (!r.ch->WaitForConnected(std::chrono::system_clock::now() +
                                std::chrono::nanoseconds(opt.timeout_ns))) {
        fail("gRPC %s: not connected within %" PRId64 " ms", target.c_str(),
             opt.timeout_ns / NS_PER_MS);
        return 1;
    }

    printf("prompt \"%s\", %" PRIu64 " requests per row after %" PRIu64
           " warm-up, one at a time; ttft rows: max tokens %" PRIu64 "\n",
           prompt_q.c_str(), opt.n_requests, opt.n_warmup, opt.max_tokens);
    printf("grpc %s, one insecure channel, synchronous API; grpc_ttft: %s\n", target.c_str(),
           opt.new_stream ? "a new stream per request" : "one stream for every request");
    fflush(stdout);
    samples rows[N_ROWS];
    for (int row = 0; row < N_ROWS; row++) {
        if (run_row(r, (row_id)row, &rows[row]) < 0) {
            fail("%s: stopped after %zu measured requests", row_names[row], rows[row].v.size());
            return 1;
        }
    }
    printf("\n| row | n | mean us | p50 us | p99 us |\n|---|---|---|---|---|\n");
    for (int row = 0; row < N_ROWS; row++)
        print_row(row_names[row], rows[row]);
    if (r.n_empty_first)
        printf("\ngrpc: %" PRIu64 " first responses with empty text\n", r.n_empty_first);
    return fflush(stdout) == 0 ? 0 : 1;
}
