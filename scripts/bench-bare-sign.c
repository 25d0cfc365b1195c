/* The bare signature that scripts/bench --bracketed measures cfsign against.
 *
 * Signs `count` canned policies, byte for byte the ones loadgen.py's drain jobs produce (the same
 * URL pattern, SHA-1, expiry now + 86400), with one PEM key, the cheapest way libcrypto 3 signs:
 * a per-key initialised EVP_MD_CTX copied for each signature (what cfsign's PrivateKey does too),
 * then EVP_DigestSign. Timed by this process's own CPU clock, so other processes on the machine
 * do not count; the policies are built before the clock starts.
 *
 * usage: bench-bare-sign KEY.pem COUNT   prints {"signatures":N,"cpu_s":S,"us_per_signature":U}
 * built by scripts/bench: gcc -O2 bench-bare-sign.c -lcrypto
 */
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s KEY.pem COUNT\n", argv[0]); return 2; }
    long count = atol(argv[2]);
    FILE *f = fopen(argv[1], "r");
    if (!f) { perror(argv[1]); return 1; }
    EVP_PKEY *pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (!pkey) { fprintf(stderr, "cannot read the key\n"); return 1; }
    EVP_MD_CTX *template = EVP_MD_CTX_new();
    if (EVP_DigestSignInit(template, NULL, EVP_sha1(), NULL, pkey) != 1) { fprintf(stderr, "init failed\n"); return 1; }

    long expires = (long)time(NULL) + 86400;
    char **policies = malloc(sizeof(char *) * count);
    size_t *lengths = malloc(sizeof(size_t) * count);
    for (long i = 0; i < count; i++) {
        char buf[512];
        int n = snprintf(buf, sizeof buf,
                         "{\"Statement\":[{\"Resource\":\"https://d111111abcdef8.cloudfront.net/invoices/%ld.pdf?tenant=%ld\","
                         "\"Condition\":{\"DateLessThan\":{\"AWS:EpochTime\":%ld}}}]}", i, i % 97, expires);
        policies[i] = strdup(buf);
        lengths[i] = (size_t)n;
    }
    unsigned char sig[1024];
    size_t total = 0;
    double start = cpu_now();
    for (long i = 0; i < count; i++) {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        size_t len = sizeof sig;
        if (EVP_MD_CTX_copy_ex(ctx, template) != 1 ||
            EVP_DigestSign(ctx, sig, &len, (const unsigned char *)policies[i], lengths[i]) != 1) {
            fprintf(stderr, "sign failed\n");
            return 1;
        }
        total += len;
        EVP_MD_CTX_free(ctx);
    }
    double cpu = cpu_now() - start;
    printf("{\"signatures\":%ld,\"cpu_s\":%.6f,\"us_per_signature\":%.3f,\"bytes\":%zu}\n", count, cpu, cpu / count * 1e6, total);
    return 0;
}
