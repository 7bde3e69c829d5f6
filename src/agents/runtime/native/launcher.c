/*
 * enclave-launch: the host side of an instance's start, where the host could
 * build it (build.ts), in one process instead of the chain of prlimit,
 * unshare, a shell, mount and setpriv (bwrap-args.ts launchArgv, which does
 * the same without it). In order:
 *
 *   --cgroup FILE        (any number) joins the instance's cgroups: a child
 *                        writes this process's pid into each cgroup.procs
 *                        while the rest goes on, and bubblewrap starts only
 *                        once it is done, so every process of the sandbox is
 *                        born inside them;
 *   --nofile=S:H --fsize=S:H --core=S:H --nproc=S:H
 *                        resource limits, as prlimit takes them;
 *   --stage FSTAB --uid UID
 *                        (a root driver) a mount namespace of its own with
 *                        private propagation, the stage's binds and the
 *                        volume's image mounted from the table the host wrote
 *                        (bwrap-args.ts stageFstab), then no supplementary
 *                        groups and the instance's host uid and gid;
 *   -- COMMAND…          then bubblewrap.
 *
 * Its messages name no host path: what it prints reaches the instance's
 * output log, which the agent's owner reads.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/loop.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_CGROUPS 8
#define MAX_LIMITS 8
#define MAX_FSTAB (64 * 1024)

/* The child joining the cgroups, while it may still write: a failed launch takes it along. */
static pid_t joining = 0;

static void fail(const char *what) {
  if (joining > 0) kill(joining, SIGKILL);
  dprintf(2, "enclave-launch: %s\n", what);
  _exit(125);
}

static const struct {
  const char *name;
  int resource;
} RESOURCES[] = {
    {"--nofile=", RLIMIT_NOFILE},
    {"--fsize=", RLIMIT_FSIZE},
    {"--core=", RLIMIT_CORE},
    {"--nproc=", RLIMIT_NPROC},
};

static rlim_t parse_number(const char *text, char end, const char **rest) {
  char *stop;
  errno = 0;
  unsigned long long value = strtoull(text, &stop, 10);
  if (errno != 0 || stop == text || *stop != end || text[0] == '-') fail("invalid arguments");
  *rest = stop;
  return (rlim_t)value;
}

/* "S:H" of --name=S:H. */
static int parse_limit(const char *arg, int *resource, struct rlimit *limit) {
  for (size_t i = 0; i < sizeof RESOURCES / sizeof RESOURCES[0]; i++) {
    size_t length = strlen(RESOURCES[i].name);
    if (strncmp(arg, RESOURCES[i].name, length) != 0) continue;
    const char *rest;
    limit->rlim_cur = parse_number(arg + length, ':', &rest);
    limit->rlim_max = parse_number(rest + 1, '\0', &rest);
    if (limit->rlim_cur > limit->rlim_max) fail("invalid arguments");
    *resource = RESOURCES[i].resource;
    return 1;
  }
  return 0;
}

/* The next field of one line of a mount table, its \ooo escapes undone in place; NULL past the last. */
static char *field(char **cursor) {
  char *at = *cursor;
  while (*at == ' ' || *at == '\t') at++;
  if (*at == '\0') {
    *cursor = at;
    return NULL;
  }
  char *start = at;
  char *out = at;
  while (*at != '\0' && *at != ' ' && *at != '\t') {
    if (at[0] == '\\' && at[1] >= '0' && at[1] <= '3' && at[2] >= '0' && at[2] <= '7' && at[3] >= '0' &&
        at[3] <= '7') {
      *out++ = (char)((at[1] - '0') * 64 + (at[2] - '0') * 8 + (at[3] - '0'));
      at += 4;
    } else {
      *out++ = *at++;
    }
  }
  *cursor = *at == '\0' ? at : at + 1;
  *out = '\0';
  return start;
}

/*
 * The loop device the image is on already (a sandbox of the instance still
 * ending), or -1. As mount(8) does, that one is used again: one file system
 * on two loop devices would be two superblocks writing one file.
 */
static int attached_loop(const struct stat *image, char *device, size_t size) {
  DIR *block = opendir("/sys/block");
  if (block == NULL) return -1;
  int found = -1;
  for (struct dirent *entry; found < 0 && (entry = readdir(block)) != NULL;) {
    if (strncmp(entry->d_name, "loop", 4) != 0) continue;
    char bound[300];
    snprintf(bound, sizeof bound, "/sys/block/%s/loop", entry->d_name);
    if (access(bound, F_OK) != 0) continue; /* no backing file */
    snprintf(device, size, "/dev/%s", entry->d_name);
    int loop = open(device, O_RDONLY | O_CLOEXEC);
    if (loop < 0) continue;
    struct loop_info64 info;
    if (ioctl(loop, LOOP_GET_STATUS64, &info) == 0 && info.lo_device == image->st_dev &&
        info.lo_inode == image->st_ino && info.lo_offset == 0 && info.lo_sizelimit == 0) {
      found = loop;
    } else {
      close(loop);
    }
  }
  closedir(block);
  return found;
}

/* The volume's image on a free loop device (cleared once unmounted), mounted at `target`. */
static void mount_image(const char *image, const char *target) {
  int image_fd = open(image, O_RDWR | O_CLOEXEC);
  struct stat image_stat;
  if (image_fd < 0 || fstat(image_fd, &image_stat) != 0 || !S_ISREG(image_stat.st_mode)) {
    fail("could not stage the sandbox or mount its volume");
  }
  char attached[300];
  int reused = attached_loop(&image_stat, attached, sizeof attached);
  if (reused >= 0) {
    int mounted = mount(attached, target, "ext4", MS_NOSUID | MS_NODEV, NULL);
    close(reused);
    close(image_fd);
    if (mounted != 0) fail("could not stage the sandbox or mount its volume");
    return;
  }
  int control = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (control < 0) fail("could not stage the sandbox or mount its volume");
  for (int attempt = 0; attempt < 16; attempt++) {
    int number = ioctl(control, LOOP_CTL_GET_FREE);
    if (number < 0) break;
    char device[32];
    snprintf(device, sizeof device, "/dev/loop%d", number);
    int loop = open(device, O_RDWR | O_CLOEXEC);
    if (loop < 0) break;
    struct loop_config config = {0};
    config.fd = (unsigned)image_fd;
    config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
    int configured = ioctl(loop, LOOP_CONFIGURE, &config);
    if (configured != 0 && (errno == EINVAL || errno == ENOTTY)) {
      /* A kernel before 5.8: the same in two steps. */
      configured = ioctl(loop, LOOP_SET_FD, image_fd);
      if (configured == 0 && ioctl(loop, LOOP_SET_STATUS64, &config.info) != 0) {
        ioctl(loop, LOOP_CLR_FD, 0);
        configured = -1;
        errno = EIO;
      }
    }
    if (configured != 0) {
      int error = errno;
      close(loop);
      if (error == EBUSY) continue; /* taken since it was free: ask again */
      break;
    }
    int mounted = mount(device, target, "ext4", MS_NOSUID | MS_NODEV, NULL);
    close(loop); /* the mount holds it now; without one, this detaches it */
    close(image_fd);
    close(control);
    if (mounted != 0) fail("could not stage the sandbox or mount its volume");
    return;
  }
  fail("could not stage the sandbox or mount its volume");
}

/* The stage: only the entries stageFstab writes (read-only and read-write binds, an ext4 image). */
static void stage(const char *fstab) {
  int fd = open(fstab, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) fail("could not stage the sandbox or mount its volume");
  static char table[MAX_FSTAB + 1];
  size_t used = 0;
  for (;;) {
    ssize_t got = read(fd, table + used, MAX_FSTAB - used);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) fail("could not stage the sandbox or mount its volume");
    if (got == 0) break;
    used += (size_t)got;
    if (used == MAX_FSTAB) fail("could not stage the sandbox or mount its volume");
  }
  close(fd);
  table[used] = '\0';
  if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
    fail("could not stage the sandbox or mount its volume");
  }
  for (char *line = table; line != NULL && *line != '\0';) {
    char *end = strchr(line, '\n');
    if (end != NULL) *end = '\0';
    char *cursor = line;
    line = end == NULL ? NULL : end + 1;
    char *source = field(&cursor);
    if (source == NULL) continue;
    char *target = field(&cursor);
    char *type = field(&cursor);
    char *options = field(&cursor);
    char *dump = field(&cursor);
    char *pass = field(&cursor);
    if (pass == NULL || dump == NULL || options == NULL || type == NULL || target == NULL ||
        field(&cursor) != NULL) {
      fail("could not stage the sandbox or mount its volume");
    }
    if (strcmp(type, "ext4") == 0 && strcmp(options, "loop,nosuid,nodev") == 0) {
      mount_image(source, target);
      continue;
    }
    unsigned long flags;
    if (strcmp(type, "none") == 0 && strcmp(options, "bind,ro,nosuid,nodev") == 0) {
      flags = MS_RDONLY | MS_NOSUID | MS_NODEV;
    } else if (strcmp(type, "none") == 0 && strcmp(options, "bind,nosuid,nodev") == 0) {
      flags = MS_NOSUID | MS_NODEV;
    } else {
      fail("could not stage the sandbox or mount its volume");
    }
    if (mount(source, target, NULL, MS_BIND, NULL) != 0 ||
        mount(NULL, target, NULL, MS_BIND | MS_REMOUNT | flags, NULL) != 0) {
      fail("could not stage the sandbox or mount its volume");
    }
  }
}

/*
 * A child writes this process's pid into each cgroup.procs; joined once it
 * exits 0. It writes only while this process lives (a failed launch kills it
 * too), so a pid used again by another process is never moved.
 */
static pid_t join_cgroups(char **files, int count) {
  if (count == 0) return 0;
  pid_t self = getpid();
  pid_t child = fork();
  if (child < 0) fail("could not join the instance cgroups");
  if (child > 0) return child;
  char line[32];
  int length = snprintf(line, sizeof line, "%d\n", (int)self);
  for (int i = 0; i < count; i++) {
    if (getppid() != self) _exit(1);
    int fd = open(files[i], O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 || write(fd, line, (size_t)length) != length) _exit(1);
    close(fd);
  }
  _exit(0);
}

int main(int argc, char **argv) {
  /* The build's check that this binary runs on this host at all (build.ts). */
  if (argc == 2 && strcmp(argv[1], "--check") == 0) return dprintf(1, "enclave-native\n") > 0 ? 0 : 1;
  char *cgroups[MAX_CGROUPS];
  int cgroup_count = 0;
  int resources[MAX_LIMITS];
  struct rlimit limits[MAX_LIMITS];
  int limit_count = 0;
  const char *fstab = NULL;
  long uid = -1;
  int i = 1;
  for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
    if (strcmp(argv[i], "--cgroup") == 0 && i + 1 < argc && cgroup_count < MAX_CGROUPS) {
      cgroups[cgroup_count++] = argv[++i];
    } else if (strcmp(argv[i], "--stage") == 0 && i + 1 < argc) {
      fstab = argv[++i];
    } else if (strcmp(argv[i], "--uid") == 0 && i + 1 < argc) {
      const char *rest;
      uid = (long)parse_number(argv[++i], '\0', &rest);
      if (uid <= 0 || uid > 0x7fffffffL) fail("invalid arguments");
    } else if (limit_count < MAX_LIMITS && parse_limit(argv[i], &resources[limit_count], &limits[limit_count])) {
      limit_count++;
    } else {
      fail("invalid arguments");
    }
  }
  if (i + 1 >= argc || (fstab == NULL) != (uid < 0)) fail("invalid arguments");
  char **command = argv + i + 1;

  joining = join_cgroups(cgroups, cgroup_count);
  for (int n = 0; n < limit_count; n++) {
    if (setrlimit(resources[n], &limits[n]) != 0) fail("could not set the resource limits");
  }
  if (fstab != NULL) stage(fstab);
  if (joining > 0) {
    int status;
    while (waitpid(joining, &status, 0) < 0) {
      if (errno != EINTR) fail("could not join the instance cgroups");
    }
    joining = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) fail("could not join the instance cgroups");
  }
  if (uid > 0) {
    if (setgroups(0, NULL) != 0 || setresgid((gid_t)uid, (gid_t)uid, (gid_t)uid) != 0 ||
        setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid) != 0 || getuid() != (uid_t)uid ||
        geteuid() != (uid_t)uid || getgid() != (gid_t)uid || getegid() != (gid_t)uid) {
      fail("could not drop to the instance's host uid");
    }
  }
  execv(command[0], command);
  fail("could not start bubblewrap");
  return 125;
}
