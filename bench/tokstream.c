// tokstream: a token-by-token SSE upstream for bench/run.sh (the `stream-tokens` case).
//
//   tokstream PORT TOKENS GAP_US
//
// Listens on 127.0.0.1:PORT. Every HTTP/1.1 request (any method, any path; a body is read by
// Content-Length and ignored) is answered 200 with a chunked `text/event-stream` of an OpenAI
// chat completion: a role chunk, TOKENS content chunks of one token each, a finish chunk
// carrying `usage`, and `data: [DONE]`. Every event is its own HTTP chunk in its own write(2).
// The first event goes out with the headers at once; each later one GAP_US microseconds after
// the previous, like a model decoding. Connections are kept alive.
//
// One thread, epoll_pwait2 with a nanosecond timeout to the earliest due event: the point is that it costs
// next to nothing per chunk, so the gateway's CPU per chunk is what the case measures. Built
// by run.sh with `gcc -O2`; no dependencies beyond libc.

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FDS 65536
#define IN_CAP 65536
#define OUT_CAP 65536

typedef struct {
  int open;
  char in[IN_CAP];
  size_t in_len;
  size_t body_left;   // request body bytes still to skip
  int streaming;      // a response is in progress
  int next_event;     // index of the next event to send (0 = role chunk with headers)
  uint64_t due_ns;    // when the next event is due (CLOCK_MONOTONIC)
  char out[OUT_CAP];
  size_t out_off, out_len;
} conn_t;

static conn_t *conns[MAX_FDS];
static int epfd;
static int maxfd = -1; // highest connection fd seen: the scans stop there
static int tokens = 16;
static uint64_t gap_ns = 1000000;

static const char *WORDS[] = {"Hello", " there", ",", " this", " is", " a", " token", " stream",
                              " from", " the", " bench", " upstream", ".", " It", " sends", " one"};

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void closec(int fd) {
  conn_t *c = conns[fd];
  if (c) {
    free(c);
    conns[fd] = NULL;
  }
  close(fd);
}

// Appends one SSE event as one HTTP chunk.
static void put_chunk(conn_t *c, const char *data, size_t n) {
  if (c->out_len + n + 32 > OUT_CAP) return; // cannot happen with the sizes used here
  c->out_len += (size_t)snprintf(c->out + c->out_len, OUT_CAP - c->out_len, "%zx\r\n", n);
  memcpy(c->out + c->out_len, data, n);
  c->out_len += n;
  memcpy(c->out + c->out_len, "\r\n", 2);
  c->out_len += 2;
}

static void put_event(conn_t *c, int i) {
  char ev[1024];
  int n;
  const char *head = "data: {\"id\":\"chatcmpl-tok1\",\"object\":\"chat.completion.chunk\","
                     "\"created\":1735689600,\"model\":\"bench-model\",\"choices\":[{\"index\":0,";
  if (i == 0) {
    n = snprintf(ev, sizeof ev, "%s\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
                 "\"finish_reason\":null}]}\n\n", head);
  } else if (i <= tokens) {
    n = snprintf(ev, sizeof ev, "%s\"delta\":{\"content\":\"%s\"},\"finish_reason\":null}]}\n\n",
                 head, WORDS[(i - 1) % 16]);
  } else if (i == tokens + 1) {
    n = snprintf(ev, sizeof ev, "%s\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":"
                 "{\"prompt_tokens\":24,\"completion_tokens\":%d,\"total_tokens\":%d}}\n\n",
                 head, tokens, 24 + tokens);
  } else {
    n = snprintf(ev, sizeof ev, "data: [DONE]\n\n");
  }
  put_chunk(c, ev, (size_t)n);
  if (i == tokens + 2) {
    memcpy(c->out + c->out_len, "0\r\n\r\n", 5);
    c->out_len += 5;
  }
}

static void set_out_interest(int fd, int want) {
  struct epoll_event e = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.fd = fd};
  epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &e);
}

// Writes what is buffered; returns -1 if the connection died.
static int flush(int fd) {
  conn_t *c = conns[fd];
  while (c->out_off < c->out_len) {
    ssize_t w = write(fd, c->out + c->out_off, c->out_len - c->out_off);
    if (w < 0) {
      if (errno == EAGAIN) {
        set_out_interest(fd, 1);
        return 0;
      }
      if (errno == EINTR) continue;
      return -1;
    }
    c->out_off += (size_t)w;
  }
  c->out_off = c->out_len = 0;
  return 0;
}

static int parse_requests(int fd);

// Sends the next event of the stream in progress (and ends the response after [DONE]).
static int send_next(int fd) {
  conn_t *c = conns[fd];
  put_event(c, c->next_event);
  c->next_event++;
  if (c->next_event > tokens + 2) {
    c->streaming = 0;
  } else {
    c->due_ns = now_ns() + gap_ns;
  }
  if (flush(fd) < 0) return -1;
  if (!c->streaming) return parse_requests(fd); // a pipelined request may be waiting
  return 0;
}

// Starts a response for every complete request in the input buffer (one at a time).
static int parse_requests(int fd) {
  conn_t *c = conns[fd];
  while (!c->streaming) {
    if (c->body_left) {
      size_t k = c->body_left < c->in_len ? c->body_left : c->in_len;
      memmove(c->in, c->in + k, c->in_len - k);
      c->in_len -= k;
      c->body_left -= k;
      if (c->body_left) return 0;
    }
    char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!end) {
      if (c->in_len == IN_CAP) return -1; // headers too large
      return 0;
    }
    size_t hlen = (size_t)(end - c->in) + 4;
    size_t clen = 0;
    for (char *p = c->in; p < end; p++) {
      if ((p == c->in || p[-1] == '\n') && strncasecmp(p, "content-length:", 15) == 0) {
        clen = strtoul(p + 15, NULL, 10);
        break;
      }
    }
    memmove(c->in, c->in + hlen, c->in_len - hlen);
    c->in_len -= hlen;
    c->body_left = clen;
    if (c->body_left) {
      size_t k = c->body_left < c->in_len ? c->body_left : c->in_len;
      memmove(c->in, c->in + k, c->in_len - k);
      c->in_len -= k;
      c->body_left -= k;
    }
    static const char hdr[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                              "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
    memcpy(c->out + c->out_len, hdr, sizeof hdr - 1);
    c->out_len += sizeof hdr - 1;
    c->streaming = 1;
    c->next_event = 0;
    if (send_next(fd) < 0) return -1; // the role chunk goes out with the headers
    if (c->body_left) return 0;
  }
  return 0;
}

// Nanoseconds until the earliest due event (-1: none due, wait for I/O only).
static int64_t next_timeout_ns(void) {
  uint64_t min = 0;
  for (int fd = 0; fd <= maxfd; fd++) {
    conn_t *c = conns[fd];
    if (c && c->streaming && c->out_len == c->out_off && (!min || c->due_ns < min)) min = c->due_ns;
  }
  if (!min) return -1;
  uint64_t t = now_ns();
  return min > t ? (int64_t)(min - t) : 0;
}

// Sends every event that is due.
static void send_due(void) {
  uint64_t t = now_ns();
  for (int f = 0; f <= maxfd; f++) {
    conn_t *c = conns[f];
    if (c && c->streaming && c->out_len == c->out_off && c->due_ns <= t) {
      if (send_next(f) < 0) closec(f);
    }
  }
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: tokstream PORT TOKENS GAP_US\n");
    return 2;
  }
  int port = atoi(argv[1]);
  tokens = atoi(argv[2]);
  gap_ns = (uint64_t)strtoull(argv[3], NULL, 10) * 1000ull;
  signal(SIGPIPE, SIG_IGN);
  // The default 50 µs timer slack would stretch every gap past what was asked for.
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);

  int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 1024) < 0) {
    perror("tokstream: bind/listen");
    return 1;
  }
  epfd = epoll_create1(0);
  struct epoll_event e = {.events = EPOLLIN, .data.fd = ls};
  epoll_ctl(epfd, EPOLL_CTL_ADD, ls, &e);
  fprintf(stderr, "tokstream: listening on 127.0.0.1:%d, %d tokens, %llu us apart\n", port, tokens,
          (unsigned long long)(gap_ns / 1000));

  struct epoll_event evs[256];
  for (;;) {
    int64_t to = next_timeout_ns();
    struct timespec ts = {.tv_sec = to / 1000000000, .tv_nsec = to % 1000000000};
    int n = epoll_pwait2(epfd, evs, 256, to < 0 ? NULL : &ts, NULL);
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("tokstream: epoll_wait");
      return 1;
    }
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == ls) {
        for (;;) {
          int cfd = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
          if (cfd < 0) break;
          if (cfd >= MAX_FDS) {
            close(cfd);
            continue;
          }
          setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          conns[cfd] = calloc(1, sizeof(conn_t));
          if (cfd > maxfd) maxfd = cfd;
          struct epoll_event ce = {.events = EPOLLIN, .data.fd = cfd};
          epoll_ctl(epfd, EPOLL_CTL_ADD, cfd, &ce);
        }
      } else if (conns[fd]) {
        conn_t *c = conns[fd];
        if (evs[i].events & EPOLLOUT) {
          if (flush(fd) < 0) {
            closec(fd);
            continue;
          }
          if (c->out_len == c->out_off) set_out_interest(fd, 0);
        }
        if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
          ssize_t r = read(fd, c->in + c->in_len, IN_CAP - c->in_len);
          if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
            closec(fd);
            continue;
          }
          if (r > 0) {
            c->in_len += (size_t)r;
            if (parse_requests(fd) < 0) {
              closec(fd);
              continue;
            }
          }
        }
      }
    }
    send_due();
  }
}
