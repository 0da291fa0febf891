/* Replay driver for the fuzz targets: runs LLVMFuzzerTestOneInput over every
 * regular file in the directories (and on the files) named on the command
 * line, so the corpus is checked by every CTest run, without libFuzzer. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Run one file; -1 if it cannot be read. The buffer is exactly the file's
 * size so sanitizers catch any read past it. */
static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t cap = 0, len = 0;

    if (!f) {
        perror(path);
        return -1;
    }
    for (;;) {
        uint8_t chunk[65536];
        size_t n = fread(chunk, 1, sizeof(chunk), f);
        if (n == 0)
            break;
        if (len + n > cap) {
            uint8_t *p;
            cap = (len + n) * 2;
            p = realloc(buf, cap);
            if (!p) {
                fprintf(stderr, "%s: out of memory\n", path);
                free(buf);
                fclose(f);
                return -1;
            }
            buf = p;
        }
        memcpy(buf + len, chunk, n);
        len += n;
    }
    if (ferror(f)) {
        perror(path);
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    {
        uint8_t *exact = malloc(len ? len : 1);
        if (!exact) {
            free(buf);
            return -1;
        }
        if (len)
            memcpy(exact, buf, len);
        free(buf);
        LLVMFuzzerTestOneInput(exact, len);
        free(exact);
    }
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Run every regular file in @p dir, in name order; adds to *n_run. */
static int run_dir(const char *dir, long *n_run)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;

    if (!d) {
        perror(dir);
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        char path[4096];
        struct stat st;
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (n == cap) {
            char **p = realloc(names, (cap = cap ? cap * 2 : 64) * sizeof(*names));
            if (!p) {
                rc = -1;
                break;
            }
            names = p;
        }
        if (!(names[n] = strdup(path))) {
            rc = -1;
            break;
        }
        n++;
    }
    closedir(d);
    if (n > 1)
        qsort(names, n, sizeof(*names), cmp_str);
    for (size_t i = 0; i < n; i++) {
        if (rc == 0 && run_file(names[i]) == 0)
            (*n_run)++;
        else
            rc = -1;
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    long n_run = 0;
    int failed = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR|FILE...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            perror(argv[i]);
            failed = 1;
        } else if (S_ISDIR(st.st_mode)) {
            failed |= run_dir(argv[i], &n_run) != 0;
        } else {
            if (run_file(argv[i]) == 0)
                n_run++;
            else
                failed = 1;
        }
    }
    printf("replayed %ld inputs\n", n_run);
    return failed ? 1 : 0;
}
