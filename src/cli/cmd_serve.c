/* `inferd serve`: load models through the registry and serve them over HTTP
 * until SIGTERM or SIGINT, then drain and exit 0. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "inferd/log.h"
#include "inferd/grpcd.h"
#include "inferd/natsworker.h"
#include "inferd/readycb.h"
#include "inferd/server.h"

#define CMD "serve"

static void help(void)
{
    printf("usage: inferd serve -m FILE [-m FILE ...] [options]\n"
           "  -m, --model FILE          GGUF model to serve (repeatable, up to %d; the first\n"
           "                            is the default); its id is the file name without .gguf.\n"
           "                            -m identity:NAME adds the built-in identity model\n"
           "                            (KServe: OUTPUTn = INPUTn, any type and shape)\n"
           "      --alias NAME          id of the model given in the same position (repeatable)\n"
           "      --host ADDR           address to listen on (default 127.0.0.1)\n"
           "      --port N              port (default 8080; 0: any free port)\n"
           "      --api-key KEY         require 'Authorization: Bearer KEY' (default: the\n"
           "                            INFERD_API_KEY environment variable, else none)\n"
           "  -np, --parallel N         concurrent sequences per model (default 4)\n"
           "      --queue N             requests waiting per model before 503 (default 64)\n"
           "  -c, --ctx N               context length (default: the model's)\n"
           "  -t, --threads N           compute threads per model (default: all CPUs)\n"
           "      --prefill-chunk N     prompt tokens per batch step (default 128)\n"
           "      --keep-alive MS       unload a model idle this long (default -1: never)\n"
           "      --memory-budget-mb N  weights + KV cache of all models (default 0: no limit)\n"
           "      --no-mmap             read models into memory instead of mapping their files\n"
           "      --timeout MS          default request deadline (default 600000; 0: none)\n"
           "      --drain-grace MS      on SIGTERM, time to finish running requests\n"
           "                            (default 30000; -1: no limit)\n"
           "      --max-body BYTES      request body limit (default 1048576)\n"
           "      --max-connections N   open connections (default 1024)\n"
           "      --conn-timeout S      idle connection timeout (default 30)\n"
           "      --max-client-connections N  open connections per client address\n"
           "                            (default: half of --max-connections)\n"
           "      --receive-timeout S   seconds to receive a whole request (default 30)\n"
           "      --http-threads N      HTTP event threads (default 2)\n"
           "      --ops-port PORT       also serve /health, /metrics, /v1/status on PORT\n"
           "      --unix PATH           also serve the HTTP API on a Unix-domain socket at PATH\n"
           "                            (replaces a stale socket there; removed at exit)\n"
           "      --unix-mode MODE      the socket file's mode, octal (default 0600)\n"
           "      --shm on|off          system shared memory (KServe/Triton extension); default:\n"
           "                            on the Unix socket, and on the port when --host is a\n"
           "                            loopback address\n"
           "      --shm-ttl S           drop regions no request used for S seconds (default 600;\n"
           "                            0: never)\n"
           "      --shm-max-regions N   regions at once, registered and created (default 1024)\n"
           "      --shm-max-mb N        MiB of all regions the worker creates (default 1024)\n"
           "      --shm-session-regions N  regions one session may create (default 64)\n"
           "      --shm-session-mb N    MiB one session may create (default 256)\n"
           "      --chat-template NAME  override the models' chat template (chatml, llama-2,\n"
           "                            llama-3, zephyr, phi-3, mistral, gemma, and variants:\n"
           "                            see docs/http.md)\n"
           "      --worker-id ID        this worker's id (default: a random UUID)\n"
           "      --nats URL            also join the NATS cluster at URL (comma-separated\n"
           "                            servers): register, heartbeats, inference on\n"
           "                            worker.ID.inference and inference.MODEL (docs/nats.md)\n"
           "      --heartbeat-ms MS     NATS heartbeat interval (default 5000)\n"
           "      --worker-tags LIST    comma-separated tags sent with the registration\n"
           "      --grpc-port N         also serve the KServe v2 gRPC service on port N (0: any\n"
           "                            free port) at --host (docs/grpc.md)\n"
           "      --grpc-unix PATH      serve it on a Unix-domain socket at PATH too (or only)\n"
           "      --no-http             no HTTP door: serve over NATS or gRPC only\n"
           "      --nats-inbox-prefix P events also go to a request's reply subject when it\n"
           "                            starts with P (default _INBOX.)\n"
           "      --nats-control-token T  models.load|unload|list need \"token\": T\n"
           "      --ready-callback URL  once the models are loaded, POST the worker's\n"
           "                            endpoint and capacity there (retried on errors\n"
           "                            and 5xx; a 4xx or giving up exits 1)\n"
           "      --pool-id ID          pool id sent with the ready callback\n"
           "      --ready-retries N     ready callback attempts (default 8)\n"
           "      --log-level LEVEL     debug, info, warn or error (default info)\n"
           "      --config FILE         JSON object of these options by name, e.g.\n"
           "                            {\"model\": [\"a.gguf\"], \"port\": 8080}; flags win\n",
           INFERD_FE_MODELS_MAX);
}

/* The readiness callback: this worker's endpoint and capacity. */
static int announce(inferd_frontend *fe, inferd_server *srv, const inferd_server_opts *so,
                    const char *model_path, const char *worker_id, const char *url,
                    const char *pool_id, uint32_t attempts, inferd_error *err)
{
    char endpoint[300];
    const bool v6 = strchr(so->host, ':') != NULL;
    snprintf(endpoint, sizeof(endpoint), "http://%s%s%s:%u", v6 ? "[" : "", so->host, v6 ? "]" : "",
             (unsigned)inferd_server_port(srv));
    inferd_ready_cb cb = inferd_ready_cb_default();
    cb.url = url;
    cb.worker_id = worker_id;
    cb.pool_id = pool_id;
    cb.endpoint = endpoint;
    cb.engine_version = INFERD_VERSION;
    cb.model_ref = model_path;
    cb.max_attempts = attempts;
    inferd_frontend_capacity(fe, &cb.memory_bytes, &cb.slots_total);
    return inferd_ready_cb_post(&cb, err);
}

int inferd__cmd_serve(int argc, char **argv)
{
    const char *models[INFERD_FE_MODELS_MAX], *aliases[INFERD_FE_MODELS_MAX];
    int n_models = 0, n_aliases = 0, n_pos = 0;
    const char *host = "127.0.0.1", *api_key = NULL, *tmpl = NULL, *config = NULL,
               *log_level = NULL, *worker_id = NULL, *ready_url = NULL, *pool_id = NULL,
               *nats_url = NULL, *worker_tags = NULL, *inbox_prefix = NULL, *control_token = NULL,
               *unix_path = NULL, *unix_mode = NULL, *shm = NULL, *grpc_unix = NULL;
    int64_t port = 8080, parallel = 4, queue = 64, ctx = 0, threads = 0, chunk = 128,
            keep_alive = -1, budget_mb = 0, timeout = 600000, grace = 30000, max_body = 1 << 20,
            max_conn = 1024, conn_timeout = 30, ready_retries = 8, heartbeat_ms = 5000,
            max_client = 0, recv_timeout = 30, http_threads = 2, ops_port = -1, shm_ttl = 600,
            shm_max_regions = 1024, shm_max_mb = 1024, shm_session_regions = 64,
            shm_session_mb = 256, grpc_port = -1;
    bool want_help = false, no_http = false, no_mmap = false;
    const char *pos[1];

    const cli_opt opts[] = {
        {"--model", "-m", CLI_STR_LIST, models, 0, 0, &n_models, INFERD_FE_MODELS_MAX, NULL},
        {"--alias", NULL, CLI_STR_LIST, aliases, 0, 0, &n_aliases, INFERD_FE_MODELS_MAX, NULL},
        {"--host", NULL, CLI_STR, &host, 0, 0, NULL, 0, NULL},
        {"--port", NULL, CLI_INT, &port, 0, 65535, NULL, 0, NULL},
        {"--api-key", NULL, CLI_STR, &api_key, 0, 0, NULL, 0, NULL},
        {"--parallel", "-np", CLI_INT, &parallel, 1, INFERD_SCHED_SLOTS_MAX, NULL, 0, NULL},
        {"--queue", NULL, CLI_INT, &queue, 1, INFERD_SCHED_QUEUE_MAX, NULL, 0, NULL},
        {"--ctx", "-c", CLI_INT, &ctx, 0, 1 << 20, NULL, 0, NULL},
        {"--threads", "-t", CLI_INT, &threads, 0, 256, NULL, 0, NULL},
        {"--prefill-chunk", NULL, CLI_INT, &chunk, 1, 65536, NULL, 0, NULL},
        {"--keep-alive", NULL, CLI_INT, &keep_alive, -1, 9.0e15, NULL, 0, NULL},
        {"--memory-budget-mb", NULL, CLI_INT, &budget_mb, 0, 1 << 30, NULL, 0, NULL},
        {"--no-mmap", NULL, CLI_FLAG, &no_mmap, 0, 0, NULL, 0, NULL},
        {"--timeout", NULL, CLI_INT, &timeout, 0, 9.0e15, NULL, 0, NULL},
        {"--drain-grace", NULL, CLI_INT, &grace, -1, 9.0e15, NULL, 0, NULL},
        {"--max-body", NULL, CLI_INT, &max_body, 1024, 1 << 30, NULL, 0, NULL},
        {"--max-connections", NULL, CLI_INT, &max_conn, 1, 100000, NULL, 0, NULL},
        {"--conn-timeout", NULL, CLI_INT, &conn_timeout, 1, 86400, NULL, 0, NULL},
        {"--max-client-connections", NULL, CLI_INT, &max_client, 1, 100000, NULL, 0, NULL},
        {"--receive-timeout", NULL, CLI_INT, &recv_timeout, 1, 86400, NULL, 0, NULL},
        {"--http-threads", NULL, CLI_INT, &http_threads, 1, 64, NULL, 0, NULL},
        {"--ops-port", NULL, CLI_INT, &ops_port, 0, 65535, NULL, 0, NULL},
        {"--unix", NULL, CLI_STR, &unix_path, 0, 0, NULL, 0, NULL},
        {"--unix-mode", NULL, CLI_STR, &unix_mode, 0, 0, NULL, 0, NULL},
        {"--shm", NULL, CLI_STR, &shm, 0, 0, NULL, 0, NULL},
        {"--shm-ttl", NULL, CLI_INT, &shm_ttl, 0, 31536000, NULL, 0, NULL},
        {"--shm-max-regions", NULL, CLI_INT, &shm_max_regions, 1, 1000000, NULL, 0, NULL},
        {"--shm-max-mb", NULL, CLI_INT, &shm_max_mb, 1, 1 << 24, NULL, 0, NULL},
        {"--shm-session-regions", NULL, CLI_INT, &shm_session_regions, 1, 1000000, NULL, 0, NULL},
        {"--shm-session-mb", NULL, CLI_INT, &shm_session_mb, 1, 1 << 24, NULL, 0, NULL},
        {"--chat-template", NULL, CLI_STR, &tmpl, 0, 0, NULL, 0, NULL},
        {"--log-level", NULL, CLI_STR, &log_level, 0, 0, NULL, 0, NULL},
        {"--worker-id", NULL, CLI_STR, &worker_id, 0, 0, NULL, 0, NULL},
        {"--ready-callback", NULL, CLI_STR, &ready_url, 0, 0, NULL, 0, NULL},
        {"--pool-id", NULL, CLI_STR, &pool_id, 0, 0, NULL, 0, NULL},
        {"--ready-retries", NULL, CLI_INT, &ready_retries, 1, 1000, NULL, 0, NULL},
        {"--nats", NULL, CLI_STR, &nats_url, 0, 0, NULL, 0, NULL},
        {"--heartbeat-ms", NULL, CLI_INT, &heartbeat_ms, 100, 3600000, NULL, 0, NULL},
        {"--worker-tags", NULL, CLI_STR, &worker_tags, 0, 0, NULL, 0, NULL},
        {"--no-http", NULL, CLI_FLAG, &no_http, 0, 0, NULL, 0, NULL},
        {"--grpc-port", NULL, CLI_INT, &grpc_port, 0, 65535, NULL, 0, NULL},
        {"--grpc-unix", NULL, CLI_STR, &grpc_unix, 0, 0, NULL, 0, NULL},
        {"--nats-inbox-prefix", NULL, CLI_STR, &inbox_prefix, 0, 0, NULL, 0, NULL},
        {"--nats-control-token", NULL, CLI_STR, &control_token, 0, 0, NULL, 0, NULL},
        {"--config", NULL, CLI_STR, &config, 0, 0, NULL, 0, NULL},
        {"--help", "-h", CLI_FLAG, &want_help, 0, 0, NULL, 0, NULL},
        {NULL, NULL, 0, NULL, 0, 0, NULL, 0, NULL},
    };
    if (inferd__cli_parse_with_config(CMD, argc, argv, opts, pos, 0, &n_pos, &config) < 0)
        return CLI_EXIT_USAGE;
    if (want_help) {
        help();
        return 0;
    }
    if (n_models == 0) {
        inferd__cli_error(CMD, "-m FILE is required (see --help)");
        return CLI_EXIT_USAGE;
    }
    if (n_aliases > n_models) {
        inferd__cli_error(CMD, "%d aliases for %d models", n_aliases, n_models);
        return CLI_EXIT_USAGE;
    }
    /* -m identity:NAME is the built-in identity model (KServe), served
     * beside the GGUF models. */
    const char *files[INFERD_FE_MODELS_MAX], *file_aliases[INFERD_FE_MODELS_MAX];
    const char *identity[8];
    size_t n_files = 0, n_identity = 0;
    for (int i = 0; i < n_models; i++) {
        if (strncmp(models[i], "identity:", 9) != 0) {
            file_aliases[n_files] = i < n_aliases ? aliases[i] : NULL;
            files[n_files++] = models[i];
            continue;
        }
        if (!models[i][9] || i < n_aliases || n_identity == 8) {
            inferd__cli_error(CMD, "-m %s: %s", models[i],
                              !models[i][9]   ? "give the identity model a name (identity:NAME)"
                              : i < n_aliases ? "an identity model takes no --alias"
                                              : "at most 8 identity models");
            return CLI_EXIT_USAGE;
        }
        identity[n_identity++] = models[i] + 9;
    }
    const bool want_grpc = grpc_port >= 0 || grpc_unix;
    if (no_http && !nats_url && !want_grpc) {
        inferd__cli_error(CMD, "--no-http: give --nats URL or --grpc-port N, or there is no "
                               "door to serve");
        return CLI_EXIT_USAGE;
    }
    if (want_grpc && !inferd_grpc_built()) {
        inferd__cli_error(CMD, "--grpc-port, --grpc-unix: this inferd was built without the "
                               "gRPC door (-DINFERD_GRPC=OFF)");
        return CLI_EXIT_USAGE;
    }
    unsigned long umode = 0600;
    if (unix_mode) {
        char *end = NULL;
        umode = strtoul(unix_mode, &end, 8);
        if (!*unix_mode || *end || umode > 0777) {
            inferd__cli_error(CMD, "--unix-mode: '%s' is not an octal file mode (0..0777)",
                              unix_mode);
            return CLI_EXIT_USAGE;
        }
        if (!unix_path) {
            inferd__cli_error(CMD, "--unix-mode: give --unix PATH too");
            return CLI_EXIT_USAGE;
        }
    }
    int shm_mode = -1;
    if (shm) {
        if (strcmp(shm, "on") == 0) {
            shm_mode = 1;
        } else if (strcmp(shm, "off") == 0) {
            shm_mode = 0;
        } else {
            inferd__cli_error(CMD, "--shm: '%s' is not on or off", shm);
            return CLI_EXIT_USAGE;
        }
    }
    if (no_http && unix_path) {
        inferd__cli_error(CMD, "--unix serves the HTTP API: not with --no-http");
        return CLI_EXIT_USAGE;
    }
    if (no_http && ready_url) {
        inferd__cli_error(CMD, "--ready-callback announces the HTTP endpoint: not with --no-http");
        return CLI_EXIT_USAGE;
    }
    if (log_level) {
        int lv = inferd_log_level_parse(log_level);
        if (lv < 0) {
            inferd__cli_error(CMD, "--log-level: '%s' is not debug, info, warn or error",
                              log_level);
            return CLI_EXIT_USAGE;
        }
        inferd_log_set_level((inferd_log_level)lv);
    }
    const char *key_from = "--api-key";
    if (!api_key) {
        api_key = getenv("INFERD_API_KEY");
        key_from = "INFERD_API_KEY";
    }
    if (api_key && !*api_key) {
        /* An empty key would turn authentication off without a word. */
        inferd__cli_error(CMD, "%s: the API key is empty (leave it out for no authentication)",
                          key_from);
        return CLI_EXIT_USAGE;
    }
    char uuid[37];
    if (!worker_id) {
        inferd_uuid4(uuid);
        worker_id = uuid;
    }

    inferd_server_opts so = inferd_server_opts_default();
    so.host = host;
    so.port = (uint16_t)port;
    so.api_key = api_key;
    so.max_body_bytes = (size_t)max_body;
    so.max_connections = (uint32_t)max_conn;
    so.conn_timeout_s = (uint32_t)conn_timeout;
    so.max_client_connections = (uint32_t)max_client;
    so.receive_timeout_s = (uint32_t)recv_timeout;
    so.http_threads = (uint32_t)http_threads;
    so.ops_listen = ops_port >= 0;
    so.ops_port = (uint16_t)(ops_port >= 0 ? ops_port : 0);
    so.unix_path = unix_path;
    so.unix_mode = (unsigned)umode;
    so.shm_mode = shm_mode;
    for (size_t i = 0; i < n_identity; i++)
        so.identity[i] = identity[i];
    so.n_identity = n_identity;
    so.shm_ttl_s = (uint32_t)shm_ttl;
    so.shm_max_regions = (uint32_t)shm_max_regions;
    so.shm_max_bytes = (uint64_t)shm_max_mb << 20;
    so.shm_session_regions = (uint32_t)shm_session_regions;
    so.shm_session_bytes = (uint64_t)shm_session_mb << 20;
    inferd_frontend_opts fo = inferd_frontend_opts_default();
    fo.n_models = n_files;
    for (size_t i = 0; i < n_files; i++) {
        fo.models[i].path = files[i];
        fo.models[i].alias = file_aliases[i];
    }
    inferd_sched_opts *sched = &fo.model_opts.sched;
    sched->model.n_ctx = (uint32_t)ctx;
    sched->model.no_mmap = no_mmap;
    sched->n_slots = (uint32_t)parallel;
    sched->n_queue_max = (uint32_t)queue;
    sched->n_prefill_chunk = (uint32_t)chunk;
    sched->n_threads = (uint32_t)threads;
    sched->default_timeout_ms = timeout;
    fo.model_opts.keep_alive_ms = keep_alive;
    fo.budget_bytes = (uint64_t)budget_mb << 20;
    fo.drain_grace_ms = grace;
    fo.chat_template = tmpl;

    /* Signals are taken by this thread only (sigwait); every thread started
     * from here on inherits the blocked mask. Peers that hang up must not
     * kill the process. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    inferd_error err = {0};
    inferd_nats_opts no = inferd_nats_opts_default();
    no.url = nats_url;
    no.worker_id = worker_id;
    no.tags = worker_tags;
    no.heartbeat_ms = heartbeat_ms;
    no.max_msg_bytes = (size_t)max_body;
    if (inbox_prefix)
        no.inbox_prefix = inbox_prefix;
    no.control_token = control_token;
    if (nats_url && inferd_nats_opts_check(&no, &err) < 0) {
        inferd__cli_error(CMD, "%s", err.msg);
        return CLI_EXIT_USAGE;
    }
    inferd_frontend *fe = NULL;
    if (inferd_frontend_create(&fo, &fe, &err) < 0) {
        inferd__cli_error(CMD, "%s", err.msg);
        return err.code == INFERD_E_INVALID ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
    }
    inferd_server *srv = NULL;
    if (!no_http && inferd_server_create(&so, fe, &srv, &err) < 0) {
        inferd__cli_error(CMD, "%s", err.msg);
        inferd_frontend_destroy(fe);
        return err.code == INFERD_E_INVALID ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
    }
    if (srv)
        inferd_log_info("serve", "listening on http://%s%s%s:%u", strchr(host, ':') ? "[" : "",
                        host, strchr(host, ':') ? "]" : "", (unsigned)inferd_server_port(srv));
    if (srv && unix_path)
        inferd_log_info("serve", "listening on unix:%s (mode %04lo)", unix_path, umode);
    if (srv && inferd_server_ops_port(srv))
        inferd_log_info("serve", "operations on http://%s%s%s:%u (/health, /metrics, /v1/status)",
                        strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "",
                        (unsigned)inferd_server_ops_port(srv));
    inferd_grpc *gd = NULL;
    if (want_grpc) {
        inferd_grpc_opts go = inferd_grpc_opts_default();
        go.host = host;
        go.tcp = grpc_port >= 0;
        go.port = (uint16_t)(grpc_port >= 0 ? grpc_port : 0);
        go.unix_path = grpc_unix;
        go.api_key = api_key;
        go.max_message_bytes = (size_t)max_body;
        go.max_calls = (uint32_t)max_conn;
        go.idle_timeout_s = (uint32_t)conn_timeout;
        go.regions = srv ? inferd_server_regions(srv, &go.shm_tcp) : NULL;
        for (size_t i = 0; i < n_identity; i++)
            go.identity[i] = identity[i];
        go.n_identity = n_identity;
        if (inferd_grpc_create(&go, fe, &gd, &err) < 0) {
            inferd__cli_error(CMD, "%s", err.msg);
            inferd_server_destroy(srv);
            inferd_frontend_destroy(fe);
            return err.code == INFERD_E_INVALID ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
        }
        if (go.tcp)
            inferd_log_info("serve", "gRPC on %s%s%s:%u", strchr(host, ':') ? "[" : "", host,
                            strchr(host, ':') ? "]" : "", (unsigned)inferd_grpc_port(gd));
        if (grpc_unix)
            inferd_log_info("serve", "gRPC on unix:%s", grpc_unix);
    }
    inferd_nats_worker *nw = NULL;
    if (nats_url) {
        no.http_host = srv ? host : NULL;
        no.http_port = srv ? inferd_server_port(srv) : 0;
        if (inferd_nats_worker_create(fe, &no, &nw, &err) < 0) {
            inferd__cli_error(CMD, "%s", err.msg);
            inferd_grpc_destroy(gd);
            inferd_server_destroy(srv);
            inferd_frontend_destroy(fe);
            return err.code == INFERD_E_INVALID ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
        }
    }
    int rc = 0;
    if (inferd_frontend_load_models(fe, &err) < 0 ||
        (nw && inferd_nats_worker_start(nw, &err) < 0)) {
        rc = CLI_EXIT_FAIL;
    } else {
        inferd_log_info("serve", "ready: %d model%s, %lld slots each", (int)n_files,
                        n_files == 1 ? "" : "s", (long long)parallel);
        if (ready_url && announce(fe, srv, &so, files[0], worker_id, ready_url, pool_id,
                                  (uint32_t)ready_retries, &err) < 0)
            rc = CLI_EXIT_FAIL;
    }
    if (rc != 0) {
        inferd__cli_error(CMD, "%s", err.msg);
    } else {
        int sig = 0;
        sigwait(&sigs, &sig);
        inferd_log_info("serve", "%s: draining (grace %lld ms)",
                        sig == SIGINT ? "SIGINT" : "SIGTERM", (long long)grace);
    }
    inferd_nats_worker_drain(nw);
    inferd_frontend_drain(fe);
    if (srv)
        inferd_server_drain(srv);
    inferd_grpc_drain(gd);
    inferd_nats_worker_destroy(nw);
    inferd_grpc_destroy(gd); /* before the server: it borrows its regions */
    inferd_server_destroy(srv);
    inferd_frontend_destroy(fe);
    if (rc != 0)
        return rc;
    inferd_log_info("serve", "stopped");
    return 0;
}
