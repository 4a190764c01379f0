/*
 * p2pc - command-line device for P2Pcluster, built on the p2pc library and its POSIX transport.
 *
 *   p2pc --host H --port P --key KEY --id ID [--secure hstcp --uid EMAIL] ACTION...
 *
 * Actions run in order on one connection:
 *   push TARGET:DATA     RID:<ID>:<DATA>, FRIENDS:<DATA>, CHILDS:<DATA>, ALLCHILDS:<DATA>, PARENT:<DATA>,
 *                        RO:<ROUTER>:<DATA>, ALIAS:<NAME>:<DATA>; prints the reply line
 *   time ARG             TCP:TIME:<ARG> (e.g. +05:30, +05:30:ISO, Asia/Kolkata); prints the reply line
 *   cmd SUB[:ARGS]       any TCP sub-command (e.g. GID, STATUS:LAMP, RETDATA:0); prints the reply line
 *   watch TARGET         TCP:WATCH (re-issued after every reconnection)
 *   deactivate           ends the secure session (later commands carry the plain KEY)
 *   sleep MS             waits, handling events
 *   listen               prints events until --count pushes or --for ms: PUSH:<data>, PRESENCE:<ID>:<state>,
 *                        SYNC:<stamp>, CONNECTED:<ID>, DISCONNECTED:<error>, LINE:<line>; reconnects
 *   shell                reads actions from stdin, one a line ("push RID:B:hi"), printing replies and events
 *                        in the order they happen, until EOF or "quit"
 *
 * Exit status: 0 success, 1 the server refused ([FAIL:...]; the error name is on stderr), 2 usage, 3 local
 * error (connection, timeout, ...). --trace copies the wire to stderr ("> " sent, "< " received).
 */
#define _POSIX_C_SOURCE 200809L

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "p2pc.h"
#include "p2pc_posix.h"

#define MAX_WATCH 8

typedef struct cli {
    p2pc_posix sock;
    p2pc_transport inner; /* the POSIX transport, wrapped by the tracing one */
    int trace;
    int trace_bol;        /* the next received byte starts a line */
    int listening;
    long pushes;
    const char *watch[MAX_WATCH];
    char watch_text[MAX_WATCH][128];
    int nwatch;
} cli;

static uint8_t rx_buf[4096 + 2];
static uint8_t tx_buf[4096 + 2];

/* ------------------------------------------------------------------ tracing transport */

static void trace_bytes(const char *prefix, const uint8_t *p, size_t n, int *bol) {
    size_t i;
    for (i = 0; i < n; i++) {
        if (*bol) {
            fputs(prefix, stderr);
            *bol = 0;
        }
        if (p[i] == '\r') continue;
        fputc(p[i], stderr);
        if (p[i] == '\n') *bol = 1;
    }
    fflush(stderr);
}

static int t_open(void *ctx, const char *host, uint16_t port, uint32_t timeout_ms) {
    cli *k = (cli *)ctx;
    int r = k->inner.open(k->inner.ctx, host, port, timeout_ms);
    if (k->trace) fprintf(stderr, "* connect %s:%u %s\n", host, (unsigned)port, r == 0 ? "ok" : "failed");
    k->trace_bol = 1;
    return r;
}

static int t_write(void *ctx, const uint8_t *buf, size_t len, uint32_t timeout_ms) {
    cli *k = (cli *)ctx;
    int r = k->inner.write(k->inner.ctx, buf, len, timeout_ms);
    if (k->trace && r > 0) {
        int bol = 1;
        trace_bytes("> ", buf, (size_t)r, &bol);
    }
    return r;
}

static int t_read(void *ctx, uint8_t *buf, size_t cap, uint32_t timeout_ms) {
    cli *k = (cli *)ctx;
    int r = k->inner.read(k->inner.ctx, buf, cap, timeout_ms);
    if (k->trace && r > 0) trace_bytes("< ", buf, (size_t)r, &k->trace_bol);
    if (k->trace && r < 0) fputs("* connection lost\n", stderr);
    return r;
}

static void t_close(void *ctx) {
    cli *k = (cli *)ctx;
    k->inner.close(k->inner.ctx);
}

static uint32_t t_now(void *ctx) {
    cli *k = (cli *)ctx;
    return k->inner.now_ms(k->inner.ctx);
}

static void t_sleep(void *ctx, uint32_t ms) {
    cli *k = (cli *)ctx;
    k->inner.sleep_ms(k->inner.ctx, ms);
}

static int t_random(void *ctx, uint8_t *buf, size_t len) {
    cli *k = (cli *)ctx;
    return k->inner.random(k->inner.ctx, buf, len);
}

/* ------------------------------------------------------------------ events */

static void put_line(const char *prefix, const char *data, size_t len) {
    fputs(prefix, stdout);
    fwrite(data, 1, len, stdout);
    fputc('\n', stdout);
    fflush(stdout);
}

static void on_event(p2pc_client *c, const p2pc_event *ev, void *user) {
    cli *k = (cli *)user;
    int i;
    switch (ev->type) {
    case P2PC_EV_PUSH:
        k->pushes++;
        if (k->listening) put_line("PUSH:", ev->data, ev->len);
        break;
    case P2PC_EV_PRESENCE:
        if (k->listening) {
            fputs("PRESENCE:", stdout);
            fwrite(ev->id, 1, ev->id_len, stdout);
            printf(":%s\n", ev->online ? "ONLINE" : "OFFLINE");
            fflush(stdout);
        }
        break;
    case P2PC_EV_SYNC:
        if (k->listening) put_line("SYNC:", ev->data, ev->len);
        break;
    case P2PC_EV_CONNECTED:
        /* Watches live as long as the connection: set them again on every new one. */
        for (i = 0; i < k->nwatch; i++) {
            int r = p2pc_watch(c, k->watch[i], 1);
            if (r != P2PC_OK) fprintf(stderr, "p2pc: watch %s: %s\n", k->watch[i], p2pc_err_name(r));
        }
        if (k->listening) put_line("CONNECTED:", ev->id, ev->id_len);
        break;
    case P2PC_EV_DISCONNECTED:
        if (k->listening) printf("DISCONNECTED:%s\n", p2pc_err_name(ev->error));
        fflush(stdout);
        break;
    case P2PC_EV_LINE:
        if (k->listening) put_line("LINE:", ev->data, ev->len);
        break;
    }
}

/* ------------------------------------------------------------------ helpers */

static int usage(void) {
    fputs("usage: p2pc --key KEY --id ID [--host H] [--port P] [--secure none|stcp|dstcp|hstcp --uid EMAIL]\n"
          "            [--timeout MS] [--backoff MIN:MAX] [--keepalive MS] [--nonce-len N] [--escape] [--trace]\n"
          "            [--count N] [--for MS] ACTION...\n"
          "actions: push TARGET:DATA | time ARG | cmd SUB[:ARGS] | watch TARGET | deactivate | sleep MS | listen | shell\n",
          stderr);
    return 2;
}

/* Status for a result: 0 ok, 1 server refusal, 3 local error. */
static int status_of(int r) {
    return r == P2PC_OK ? 0 : r > 0 ? 1 : 3;
}

static int report(const char *what, int r, const p2pc_client *c) {
    if (r > 0)
        fprintf(stderr, "p2pc: %s: %s (%s)\n", what, p2pc_err_name(r), p2pc_last_reply(c));
    else if (r < 0)
        fprintf(stderr, "p2pc: %s: %s\n", what, p2pc_err_name(r));
    return status_of(r);
}

/* \xNN and \\ escapes, in place; returns the new length. */
static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

static size_t unescape(char *s) {
    size_t i = 0, o = 0, n = strlen(s);
    while (i < n) {
        if (s[i] == '\\' && i + 1 < n && s[i + 1] == '\\') {
            s[o++] = '\\';
            i += 2;
        } else if (s[i] == '\\' && i + 3 < n && s[i + 1] == 'x' && hexval(s[i + 2]) >= 0 && hexval(s[i + 3]) >= 0) {
            s[o++] = (char)(hexval(s[i + 2]) * 16 + hexval(s[i + 3]));
            i += 4;
        } else {
            s[o++] = s[i++];
        }
    }
    s[o] = '\0';
    return o;
}

static int parse_target(const char *t, size_t n, p2pc_target *out) {
    static const struct {
        const char *name;
        p2pc_target t;
    } names[] = {{"RID", P2PC_RID},       {"FRIENDS", P2PC_FRIENDS}, {"CHILDS", P2PC_CHILDS}, {"ALLCHILDS", P2PC_ALLCHILDS},
                 {"PARENT", P2PC_PARENT}, {"RO", P2PC_RO},           {"ALIAS", P2PC_ALIAS}};
    size_t i;
    for (i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strlen(names[i].name) == n && memcmp(names[i].name, t, n) == 0) {
            *out = names[i].t;
            return 1;
        }
    }
    return 0;
}

/* The reply line as received (it may hold any byte but CR/LF), unless the call sent nothing. */
static void print_reply(const p2pc_client *c, int r) {
    size_t n = p2pc_last_reply_len(c);
    if (r >= 0 && n > 0) put_line("", p2pc_last_reply(c), n < P2PC_REPLY_MAX ? n : P2PC_REPLY_MAX - 1);
}

/* push TARGET[:NAME]:DATA */
static int do_push(p2pc_client *c, char *spec, int escape) {
    char *colon = strchr(spec, ':');
    char *name = NULL, *data;
    p2pc_target t;
    size_t len;
    int r;
    if (!parse_target(spec, colon != NULL ? (size_t)(colon - spec) : strlen(spec), &t)) {
        fprintf(stderr, "p2pc: push: unknown target in %s\n", spec);
        return 2;
    }
    data = colon != NULL ? colon + 1 : spec + strlen(spec);
    if (t == P2PC_RID || t == P2PC_RO || t == P2PC_ALIAS) {
        char *c2 = colon != NULL ? strchr(colon + 1, ':') : NULL;
        if (c2 == NULL) {
            fprintf(stderr, "p2pc: push: %s needs a name and data\n", spec);
            return 2;
        }
        *c2 = '\0';
        name = colon + 1;
        data = c2 + 1;
    }
    len = escape ? unescape(data) : strlen(data);
    r = p2pc_push(c, t, name, data, len, NULL);
    print_reply(c, r);
    return report("push", r, c);
}

static int wait_events(p2pc_client *c, cli *k, long for_ms, long count) {
    uint32_t t0 = k->inner.now_ms(k->inner.ctx);
    for (;;) {
        uint32_t spent = k->inner.now_ms(k->inner.ctx) - t0;
        if (count >= 0 && k->pushes >= count) return 0;
        if (for_ms >= 0 && spent >= (uint32_t)for_ms) return 0;
        (void)p2pc_poll(c, 20);
    }
}


/* Runs one action; arg is its argument (NULL for deactivate/listen). Returns the exit status. */
static int act(p2pc_client *c, cli *k, const char *verb, char *arg, int escape, long for_ms, long count) {
    int r;
    if (strcmp(verb, "push") == 0 && arg != NULL) return do_push(c, arg, escape);
    if (strcmp(verb, "time") == 0 && arg != NULL) {
        r = p2pc_time(c, arg, NULL, 0, NULL);
        print_reply(c, r);
        return report("time", r, c);
    }
    if (strcmp(verb, "cmd") == 0 && arg != NULL) {
        static char out[sizeof rx_buf];
        char sub[32];
        const char *colon = strchr(arg, ':');
        size_t n = colon != NULL ? (size_t)(colon - arg) : strlen(arg);
        if (n >= sizeof sub) return usage();
        memcpy(sub, arg, n);
        sub[n] = '\0';
        r = p2pc_command(c, sub, colon != NULL ? colon + 1 : NULL, out, sizeof out);
        if (r >= 0) {
            size_t len = p2pc_last_reply_len(c);
            put_line("", out, len < sizeof out ? len : sizeof out - 1);
        }
        return report("cmd", r, c);
    }
    if (strcmp(verb, "watch") == 0 && arg != NULL) {
        if (k->nwatch < MAX_WATCH) {
            strncpy(k->watch_text[k->nwatch], arg, sizeof k->watch_text[0] - 1);
            k->watch[k->nwatch] = k->watch_text[k->nwatch];
            k->nwatch++;
        }
        r = p2pc_watch(c, arg, 1);
        print_reply(c, r);
        return report("watch", r, c);
    }
    if (strcmp(verb, "deactivate") == 0) {
        r = p2pc_deactivate(c);
        print_reply(c, r);
        return report("deactivate", r, c);
    }
    if (strcmp(verb, "sleep") == 0 && arg != NULL) return wait_events(c, k, atol(arg), -1);
    if (strcmp(verb, "listen") == 0) return wait_events(c, k, for_ms, count);
    fprintf(stderr, "p2pc: unknown action or missing argument: %s\n", verb);
    return 2;
}

/* shell: actions from stdin, one a line ("push RID:B:hi", "time +05:30", "quit"), events printed as they come,
 * until EOF or quit. */
static int shell(p2pc_client *c, cli *k, int escape) {
    static char line[4096 + 64];
    size_t len = 0;
    for (;;) {
        struct pollfd p;
        p.fd = 0;
        p.events = POLLIN;
        p.revents = 0;
        if (poll(&p, 1, 0) > 0) {
            ssize_t n = read(0, line + len, sizeof line - 1 - len);
            char *nl;
            if (n <= 0) return 0;
            len += (size_t)n;
            line[len] = '\0';
            while ((nl = strchr(line, '\n')) != NULL) {
                char *sp, *arg = NULL;
                size_t used = (size_t)(nl - line) + 1;
                *nl = '\0';
                if (nl > line && nl[-1] == '\r') nl[-1] = '\0';
                sp = strchr(line, ' ');
                if (sp != NULL) {
                    *sp = '\0';
                    arg = sp + 1;
                }
                if (strcmp(line, "quit") == 0) return 0;
                if (line[0] != '\0' && strcmp(line, "listen") != 0 && strcmp(line, "shell") != 0)
                    (void)act(c, k, line, arg, escape, -1, -1);
                memmove(line, line + used, len - used);
                len -= used;
                line[len] = '\0';
            }
            if (len == sizeof line - 1) len = 0; /* an overlong line is dropped */
        }
        (void)p2pc_poll(c, 10);
    }
}

/* The actions that take an argument. */
static int takes_arg(const char *verb) {
    return strcmp(verb, "push") == 0 || strcmp(verb, "time") == 0 || strcmp(verb, "cmd") == 0 ||
           strcmp(verb, "watch") == 0 || strcmp(verb, "sleep") == 0;
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv) {
    static cli k;
    static p2pc_client c;
    p2pc_config cfg;
    p2pc_transport io;
    const char *id = NULL;
    long for_ms = -1, count = -1;
    int escape = 0, i, j, r, status = 0;

    p2pc_config_defaults(&cfg);
    cfg.host = "127.0.0.1";
    cfg.key = getenv("P2PC_KEY");
    for (i = 1; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(o, "--trace") == 0) {
            k.trace = 1;
            continue;
        }
        if (strcmp(o, "--escape") == 0) {
            escape = 1;
            continue;
        }
        if (v == NULL) return usage();
        i++;
        if (strcmp(o, "--host") == 0) cfg.host = v;
        else if (strcmp(o, "--port") == 0) cfg.port = (uint16_t)atoi(v);
        else if (strcmp(o, "--key") == 0) cfg.key = v;
        else if (strcmp(o, "--id") == 0) id = v;
        else if (strcmp(o, "--uid") == 0) cfg.uid = v;
        else if (strcmp(o, "--timeout") == 0) cfg.reply_timeout_ms = cfg.connect_timeout_ms = (uint32_t)atol(v);
        else if (strcmp(o, "--keepalive") == 0) cfg.keepalive_ms = (uint32_t)atol(v);
        else if (strcmp(o, "--nonce-len") == 0) cfg.nonce_len = (uint8_t)atoi(v);
        else if (strcmp(o, "--count") == 0) count = atol(v);
        else if (strcmp(o, "--for") == 0) for_ms = atol(v);
        else if (strcmp(o, "--backoff") == 0) {
            const char *colon = strchr(v, ':');
            cfg.backoff_min_ms = (uint32_t)atol(v);
            cfg.backoff_max_ms = colon != NULL ? (uint32_t)atol(colon + 1) : cfg.backoff_min_ms;
        } else if (strcmp(o, "--secure") == 0) {
            if (strcmp(v, "none") == 0) cfg.secure = P2PC_SECURE_NONE;
            else if (strcmp(v, "stcp") == 0) cfg.secure = P2PC_SECURE_STCP;
            else if (strcmp(v, "dstcp") == 0) cfg.secure = P2PC_SECURE_DSTCP;
            else if (strcmp(v, "hstcp") == 0) cfg.secure = P2PC_SECURE_HSTCP;
            else return usage();
        } else return usage();
    }
    if (i >= argc || cfg.key == NULL || id == NULL) return usage();

    p2pc_posix_transport(&k.sock, &k.inner);
    io.ctx = &k;
    io.open = t_open;
    io.write = t_write;
    io.read = t_read;
    io.close = t_close;
    io.now_ms = t_now;
    io.sleep_ms = t_sleep;
    io.random = t_random;
    cfg.rx_buf = rx_buf;
    cfg.rx_size = sizeof rx_buf;
    cfg.tx_buf = tx_buf;
    cfg.tx_size = sizeof tx_buf;
    cfg.on_event = on_event;
    cfg.user = &k;
    /* Check the whole action list before connecting. Events are printed by listen and shell; watches given as
     * arguments are set by the first CONNECTED event (and again after every reconnection). */
    for (j = i; j < argc; j++) {
        const char *verb = argv[j];
        if (takes_arg(verb)) {
            if (j + 1 >= argc) return usage();
            if (strcmp(verb, "watch") == 0 && k.nwatch < MAX_WATCH) k.watch[k.nwatch++] = argv[j + 1];
            j++;
        } else if (strcmp(verb, "listen") == 0 || strcmp(verb, "shell") == 0) {
            k.listening = 1;
        } else if (strcmp(verb, "deactivate") != 0) {
            fprintf(stderr, "p2pc: unknown action %s (options go before the actions)\n", verb);
            return usage();
        }
    }
    r = p2pc_init(&c, &cfg, &io);
    if (r != P2PC_OK) {
        fprintf(stderr, "p2pc: bad configuration (%s)\n", p2pc_err_name(r));
        return 2;
    }
    r = p2pc_register(&c, id);
    if (r != P2PC_OK) {
        if (r > 0) print_reply(&c, r);
        status = report("register", r, &c);
        p2pc_close(&c);
        p2pc_posix_cleanup(&k.sock);
        return status;
    }

    for (; i < argc && status == 0; i++) {
        const char *verb = argv[i];
        char *arg = takes_arg(verb) ? argv[++i] : NULL;
        if (strcmp(verb, "watch") == 0) continue; /* already set */
        if (strcmp(verb, "shell") == 0) status = shell(&c, &k, escape);
        else status = act(&c, &k, verb, arg, escape, for_ms, count);
    }
    p2pc_close(&c);
    p2pc_posix_cleanup(&k.sock);
    return status;
}
