/*
 * enclave-starter: the first process inside an instance's sandbox, where the
 * host could build it (build.ts). It starts the agent at once and the Node
 * supervisor beside it, so the agent's start no longer waits for the
 * supervisor's (a cold start is then about the agent's own start). Without
 * it, the supervisor starts the agent itself (supervisor.mjs).
 *
 *   fd 3  in: the driver's frame (supervisor-channel.ts configFrame), then
 *         EOF: u32 length + the supervisor's JSON config; u32 count + the
 *         agent's argv; u32 count + its environment ("NAME=VALUE", secrets
 *         among them); u32 count + the loopback ports that must listen
 *         before the agent runs (u32 each). Every string is u32 length +
 *         bytes, lengths big-endian.
 *   argv  the supervisor's command.
 *
 * It binds the ports (127.0.0.1, so an early connection waits in the
 * backlog), starts the agent in a session of its own in /app with stdin on
 * /dev/null, then starts the supervisor with the listening sockets on fds 9
 * and up, fds 4, 6 and 7 as it got them, and a pipe on fd 3 that carries
 * JSON lines: the config, then {"event":"started","pid":N} or
 * {"event":"error","errno":N}, then {"event":"exit","code":N} or
 * {"event":"exit","signal":N}. The secrets reach the agent's environment
 * only; this process wipes its copies once the agent runs.
 *
 * It stays as the parent of both: SIGTERM and SIGINT go to the agent's
 * process group while it runs (to the supervisor after); when the
 * supervisor ends first the agent is killed. It exits with the supervisor's
 * status. Everything here shares the agent's uid and is read-only to it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define FRAME_FD 3
#define CONTROL_FD 4
#define INGRESS_FD 6
#define SUPPORT_FD 7
#define FIRST_LISTEN_FD 9
#define MAX_FRAME (1024 * 1024)
#define MAX_ITEMS 4096
#define MAX_PORTS 4

static volatile sig_atomic_t agent_pid = 0;
static volatile sig_atomic_t agent_running = 0;
static volatile sig_atomic_t supervisor_pid = 0;

static void fail(const char *what) {
  dprintf(2, "enclave-starter: %s\n", what);
  _exit(126);
}

static void forward(int sig) {
  if (agent_running && agent_pid > 0) {
    if (kill(-agent_pid, sig) != 0) kill(agent_pid, sig);
  } else if (supervisor_pid > 0) {
    kill(supervisor_pid, sig);
  }
}

/* Every fd in [from, to] closed; close_range where the kernel has it. */
static void close_fds(unsigned from, unsigned to) {
  if (from > to || to < 3) return;
  if (syscall(SYS_close_range, from, to, 0) == 0) return;
  for (unsigned fd = from; fd <= to && fd < 65536; fd++) close((int)fd);
}

struct frame {
  const unsigned char *at;
  size_t left;
};

static uint32_t take_u32(struct frame *f) {
  if (f->left < 4) fail("the config frame is truncated");
  uint32_t value = ((uint32_t)f->at[0] << 24) | ((uint32_t)f->at[1] << 16) | ((uint32_t)f->at[2] << 8) | f->at[3];
  f->at += 4;
  f->left -= 4;
  return value;
}

static const unsigned char *take_bytes(struct frame *f, uint32_t length) {
  if (f->left < length) fail("the config frame is truncated");
  const unsigned char *bytes = f->at;
  f->at += length;
  f->left -= length;
  return bytes;
}

/* A NULL-terminated list of NUL-terminated copies: argv or envp. */
static char **take_strings(struct frame *f, int allow_empty) {
  uint32_t count = take_u32(f);
  if (count > MAX_ITEMS || (count == 0 && !allow_empty)) fail("the config frame is invalid");
  char **list = calloc((size_t)count + 1, sizeof *list);
  if (list == NULL) fail("out of memory");
  for (uint32_t i = 0; i < count; i++) {
    uint32_t length = take_u32(f);
    const unsigned char *bytes = take_bytes(f, length);
    if (memchr(bytes, 0, length) != NULL) fail("the config frame holds a NUL byte");
    list[i] = malloc((size_t)length + 1);
    if (list[i] == NULL) fail("out of memory");
    memcpy(list[i], bytes, length);
    list[i][length] = 0;
  }
  return list;
}

static void wipe_strings(char **list) {
  for (char **item = list; *item != NULL; item++) explicit_bzero(*item, strlen(*item));
}

static unsigned char *read_frame(size_t *size) {
  unsigned char *buffer = malloc(MAX_FRAME + 1);
  if (buffer == NULL) fail("out of memory");
  size_t used = 0;
  for (;;) {
    if (used > MAX_FRAME) fail("the config is too large");
    ssize_t got = read(FRAME_FD, buffer + used, MAX_FRAME + 1 - used);
    if (got == 0) break;
    if (got < 0) {
      if (errno == EINTR) continue;
      fail("could not read the config");
    }
    used += (size_t)got;
  }
  *size = used;
  return buffer;
}

static int listen_loopback(uint32_t port) {
  if (port == 0 || port > 65535) fail("the config frame is invalid");
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) fail("could not open a socket");
  int on = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&address, sizeof address) != 0 || listen(fd, 511) != 0) {
    dprintf(2, "enclave-starter: could not listen on 127.0.0.1:%u: %s\n", port, strerror(errno));
    _exit(126);
  }
  return fd;
}

static void write_all(int fd, const char *bytes, size_t length) {
  while (length > 0) {
    ssize_t put = write(fd, bytes, length);
    if (put < 0) {
      if (errno == EINTR) continue;
      return; /* the supervisor is gone: its exit is seen by the wait below */
    }
    bytes += put;
    length -= (size_t)put;
  }
}

static void write_line(int fd, const char *format, long value) {
  char line[64];
  int length = snprintf(line, sizeof line, format, value);
  write_all(fd, line, (size_t)length);
}

/* A child's signals as a fresh process has them: default actions, nothing blocked. */
static void reset_signals(void) {
  signal(SIGTERM, SIG_DFL);
  signal(SIGINT, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
}

/* The agent: its own session, /app, stdin on /dev/null, only fds 0-2 (and the exec-error pipe, close-on-exec). */
static void exec_agent(char **argv, char **envp, int error_pipe) {
  reset_signals();
  setsid();
  int null = open("/dev/null", O_RDONLY);
  if (null >= 0 && null != 0) {
    dup2(null, 0);
    close(null);
  }
  close_fds(3, (unsigned)error_pipe - 1);
  close_fds((unsigned)error_pipe + 1, ~0U);
  int error = 0;
  if (chdir("/app") != 0) error = errno;
  else {
    execvpe(argv[0], argv, envp);
    error = errno;
  }
  write_all(error_pipe, (const char *)&error, sizeof error);
  _exit(127);
}

int main(int argc, char **argv) {
  /* The build's check that this binary runs on this host at all (build.ts). */
  if (argc == 2 && strcmp(argv[1], "--check") == 0) return dprintf(1, "enclave-native\n") > 0 ? 0 : 1;
  if (argc < 2) fail("usage: enclave-starter SUPERVISOR [ARG...]");
  /* fds inherited without close-on-exec, beyond ours, would reach the agent and the supervisor. */
  close_fds(5, 5);
  close_fds(8, ~0U);

  size_t size = 0;
  unsigned char *buffer = read_frame(&size);
  close(FRAME_FD);
  struct frame f = {buffer, size};
  uint32_t config_length = take_u32(&f);
  const unsigned char *config = take_bytes(&f, config_length);
  if (memchr(config, '\n', config_length) != NULL) fail("the config frame is invalid");
  char **agent_argv = take_strings(&f, 0);
  char **agent_envp = take_strings(&f, 1);
  uint32_t port_count = take_u32(&f);
  if (port_count > MAX_PORTS) fail("the config frame is invalid");
  for (uint32_t i = 0; i < port_count; i++) {
    int fd = listen_loopback(take_u32(&f));
    if (dup2(fd, FIRST_LISTEN_FD + (int)i) < 0) fail("could not place a listening socket");
    if (fd != FIRST_LISTEN_FD + (int)i) close(fd);
  }
  if (f.left != 0) fail("the config frame is invalid");

  int error_pipe[2];
  int status_pipe[2];
  if (pipe2(error_pipe, O_CLOEXEC) != 0 || pipe2(status_pipe, O_CLOEXEC) != 0) fail("could not open a pipe");
  /* From here on stderr is the instance's (the agent writes to it too): the driver stops reading it for this process's failures. */
  dprintf(CONTROL_FD, "{\"event\":\"hello\"}\n");
  /* SIGTERM and SIGINT wait until they can be forwarded: held while the children start, default again in them. */
  sigset_t held;
  sigemptyset(&held);
  sigaddset(&held, SIGTERM);
  sigaddset(&held, SIGINT);
  sigprocmask(SIG_BLOCK, &held, NULL);

  pid_t agent = fork();
  if (agent < 0) fail("could not start the agent");
  if (agent == 0) exec_agent(agent_argv, agent_envp, error_pipe[1]);
  agent_pid = agent;
  agent_running = 1;
  close(error_pipe[1]);

  pid_t supervisor = fork();
  if (supervisor < 0) {
    kill(-agent, SIGKILL);
    kill(agent, SIGKILL);
    fail("could not start the supervisor");
  }
  if (supervisor == 0) {
    reset_signals();
    if (dup2(status_pipe[0], FRAME_FD) < 0) _exit(126);
    execv(argv[1], argv + 1);
    dprintf(2, "enclave-starter: could not start the supervisor: %s\n", strerror(errno));
    _exit(126);
  }
  supervisor_pid = supervisor;
  /* The supervisor alone holds the control channel, the host's listeners and the loopback ones. */
  close(status_pipe[0]);
  close(CONTROL_FD);
  close(INGRESS_FD);
  close(SUPPORT_FD);
  close_fds(FIRST_LISTEN_FD, FIRST_LISTEN_FD + port_count - 1);

  struct sigaction action = {0};
  action.sa_handler = forward;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, NULL);
  sigaction(SIGINT, &action, NULL);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  sigprocmask(SIG_UNBLOCK, &held, NULL);

  int out = status_pipe[1];
  write_all(out, (const char *)config, config_length);
  write_all(out, "\n", 1);
  explicit_bzero(buffer, size);
  free(buffer);

  /* Closed on exec (empty read) or written the exec's errno. */
  int exec_error = 0;
  ssize_t got;
  do got = read(error_pipe[0], &exec_error, sizeof exec_error);
  while (got < 0 && errno == EINTR);
  close(error_pipe[0]);
  wipe_strings(agent_envp);
  if (got == (ssize_t)sizeof exec_error) write_line(out, "{\"event\":\"error\",\"errno\":%ld}\n", exec_error);
  else write_line(out, "{\"event\":\"started\",\"pid\":%ld}\n", (long)agent);

  int supervisor_status = 0;
  int supervisor_done = 0;
  for (;;) {
    int status;
    pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (pid == agent) {
      agent_running = 0;
      if (WIFSIGNALED(status)) write_line(out, "{\"event\":\"exit\",\"signal\":%ld}\n", WTERMSIG(status));
      else write_line(out, "{\"event\":\"exit\",\"code\":%ld}\n", WEXITSTATUS(status));
      close(out);
      out = -1;
    } else if (pid == supervisor) {
      supervisor_done = 1;
      supervisor_status = status;
      if (agent_running) {
        kill(-agent, SIGKILL);
        kill(agent, SIGKILL);
      }
    }
    if (supervisor_done && !agent_running) break;
  }
  if (WIFSIGNALED(supervisor_status)) return 128 + WTERMSIG(supervisor_status);
  return WEXITSTATUS(supervisor_status);
}
