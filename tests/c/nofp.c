/* A helper built the way distributions build C (`gcc -g -O2
 * -fomit-frame-pointer`) whose failing allocation and OOM trigger happen in
 * main -> f -> g, for tests of user stacks unwound from CFI.
 *
 *   nofp alloc-fail MEMCG_DIR MAX_FAILURES
 *     BPF array maps with one 16 KiB value in a memory cgroup at its limit,
 *     until their order-3 kmalloc fails MAX_FAILURES times (as the Rust
 *     test helper's alloc-fail; shared/notes/KERNEL-FACTS.md).
 *   nofp oom MEMCG_DIR MB
 *     touches MB MiB of anonymous memory in the memory cgroup (whose limit
 *     the test set lower) until its OOM killer kills this process.
 *   nofp reclaim MEMCG_DIR FILE
 *     reads FILE (written and dropped from the page cache by the test)
 *     in the memory cgroup (whose limit the test set lower than FILE):
 *     the page cache it fills is charged to the cgroup, which reclaims at
 *     its limit in main -> stall_f -> stall_g -> read().
 *
 * Each prints {"pid":N}, waits for `go` on stdin, does its work; alloc-fail
 * and reclaim then print their result, and alloc-fail waits for `exit`. Lines marked with
 * UNWIND-<NAME> are the calls the tests expect in the stack. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

struct map_create_attr {
    unsigned map_type, key_size, value_size, max_entries;
    unsigned rest[14];
};

#define MAX_FDS 100000
static int fds[MAX_FDS];
static int nfds;

static void wait_for(const char *word) {
    char line[64];
    if (!fgets(line, sizeof line, stdin) || strncmp(line, word, strlen(word)) != 0) {
        fprintf(stderr, "expected `%s` on stdin\n", word);
        exit(2);
    }
}

static void write_file(const char *dir, const char *file, unsigned long long value) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "w");
    if (!f || fprintf(f, "%llu", value) < 0 || fclose(f) != 0) {
        perror(path);
        exit(2);
    }
}

static unsigned long long read_file(const char *dir, const char *file) {
    char path[4096];
    unsigned long long value = 0;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "r");
    if (!f || fscanf(f, "%llu", &value) != 1) {
        perror(path);
        exit(2);
    }
    fclose(f);
    return value;
}

static int has_file(const char *dir, const char *file) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    return access(path, F_OK) == 0;
}

/* The innermost function of ours: libc's syscall() is called from here. */
__attribute__((noipa)) long g(unsigned value_size) {
    struct map_create_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.map_type = 2; /* BPF_MAP_TYPE_ARRAY */
    attr.key_size = 4;
    attr.value_size = value_size;
    attr.max_entries = 1;
    long fd = syscall(SYS_bpf, 0 /* BPF_MAP_CREATE */, &attr, sizeof attr); /* UNWIND-G */
    return fd < 0 ? -errno : fd;
}

__attribute__((noipa)) int f(int max_failures) {
    int failures = 0;
    while (failures < max_failures && nfds < MAX_FDS) {
        long fd = g(16384); /* UNWIND-F */
        if (fd >= 0) {
            fds[nfds++] = (int)fd;
        } else if (fd == -ENOMEM) {
            failures++;
        } else {
            fprintf(stderr, "BPF_MAP_CREATE failed: %s\n", strerror((int)-fd));
            exit(2);
        }
    }
    return failures;
}

/* Writes one byte per page: each fault charges the memory cgroup. */
__attribute__((noipa)) void touch(volatile char *area, size_t len) {
    for (size_t offset = 0; offset < len; offset += 4096)
        area[offset] = 1; /* UNWIND-TOUCH */
}

__attribute__((noipa)) void hog(size_t len) {
    char *area = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    touch(area, len); /* UNWIND-HOG */
    munmap(area, len);
}

/* One read of the file: its page cache is charged to the memory cgroup.
 * (Not a tail call, which would leave this frame off the stack.) */
__attribute__((noipa)) long stall_g(int fd, char *buf, size_t len) {
    long n = read(fd, buf, len); /* UNWIND-STALL-G */
    return n < 0 ? -errno : n;
}

__attribute__((noipa)) long stall_f(const char *path) {
    static char buf[1 << 20];
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        perror(path);
        exit(2);
    }
    long total = 0;
    for (;;) {
        long n = stall_g(fd, buf, sizeof buf); /* UNWIND-STALL-F */
        if (n <= 0)
            break;
        total += n;
    }
    close(fd);
    return total;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: nofp alloc-fail MEMCG_DIR MAX_FAILURES | nofp oom MEMCG_DIR MB | "
                        "nofp reclaim MEMCG_DIR FILE\n");
        return 2;
    }
    const char *memcg = argv[2];
    /* Touched before joining the memcg: a page fault at its tight limit
     * would get this process OOM-killed instead of failing the kernel's
     * allocation. */
    memset(fds, 0xff, sizeof fds);
    printf("{\"pid\":%d}\n", getpid());
    fflush(stdout);
    wait_for("go");
    write_file(memcg, "cgroup.procs", (unsigned long long)getpid());
    if (strcmp(argv[1], "reclaim") == 0) {
        long total = stall_f(argv[3]); /* UNWIND-STALL-MAIN */
        printf("{\"read\":%ld}\n", total);
        return 0;
    }
    if (strcmp(argv[1], "oom") == 0) {
        hog((size_t)atoi(argv[3]) << 20); /* UNWIND-OOM-MAIN */
        printf("{\"survived\":true}\n");
        return 0;
    }
    int v1 = has_file(memcg, "memory.usage_in_bytes");
    unsigned long long usage = read_file(memcg, v1 ? "memory.usage_in_bytes" : "memory.current");
    write_file(memcg, v1 ? "memory.limit_in_bytes" : "memory.max", usage + (1 << 20));
    int failures = f(atoi(argv[3])); /* UNWIND-MAIN */
    printf("{\"maps\":%d,\"failed_creates\":%d}\n", nfds, failures);
    fflush(stdout);
    wait_for("exit");
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    return 0;
}
