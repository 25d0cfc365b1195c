/* The bare PKCS#11 signature that scripts/bench --hsm-only measures cfsign's SoftHSM path against.
 *
 * dlopens a PKCS#11 module, logs in to the token labelled TOKEN with the PIN in PINFILE, finds
 * the private key labelled LABEL, and signs `count` canned policies (byte for byte loadgen.py's,
 * as bench-bare-sign.c builds them) with C_SignInit + C_Sign, the two calls cfsign makes per
 * signature: CKM_SHA1_RSA_PKCS over the policy for RSA, CKM_ECDSA over its SHA-1 digest for EC
 * (cfsign computes the digest itself, as here with libcrypto). Timed by this process's own CPU
 * clock (which includes the module's work: SoftHSM signs in this process).
 *
 * usage: bench-bare-pkcs11 MODULE.so TOKEN LABEL PINFILE rsa|ec COUNT
 * prints {"signatures":N,"cpu_s":S,"us_per_signature":U}
 * built by scripts/bench: gcc -O2 -I/usr/include/p11-kit-1 bench-bare-pkcs11.c -ldl -lcrypto
 */
#include <dlfcn.h>
#include <openssl/sha.h>
#include <p11-kit/pkcs11.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void check(CK_RV rv, const char *call) {
    if (rv != CKR_OK) { fprintf(stderr, "%s failed: 0x%lx\n", call, (unsigned long)rv); exit(1); }
}

int main(int argc, char **argv) {
    if (argc != 7) { fprintf(stderr, "usage: %s MODULE TOKEN LABEL PINFILE rsa|ec COUNT\n", argv[0]); return 2; }
    const char *token = argv[2], *label = argv[3];
    int rsa = strcmp(argv[5], "rsa") == 0;
    long count = atol(argv[6]);
    char pin[256] = {0};
    FILE *pf = fopen(argv[4], "r");
    if (!pf || !fgets(pin, sizeof pin, pf)) { perror(argv[4]); return 1; }
    fclose(pf);
    pin[strcspn(pin, "\r\n")] = 0;

    void *lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 1; }
    CK_C_GetFunctionList getList = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
    CK_FUNCTION_LIST_PTR f;
    check(getList(&f), "C_GetFunctionList");
    check(f->C_Initialize(NULL), "C_Initialize");
    CK_SLOT_ID slots[64];
    CK_ULONG nslots = 64;
    check(f->C_GetSlotList(CK_TRUE, slots, &nslots), "C_GetSlotList");
    CK_SLOT_ID slot = 0;
    int found = 0;
    for (CK_ULONG i = 0; i < nslots && !found; i++) {
        CK_TOKEN_INFO info;
        check(f->C_GetTokenInfo(slots[i], &info), "C_GetTokenInfo");
        size_t n = strlen(token);
        if (n <= 32 && memcmp(info.label, token, n) == 0 && (n == 32 || info.label[n] == ' ')) { slot = slots[i]; found = 1; }
    }
    if (!found) { fprintf(stderr, "no token labelled %s\n", token); return 1; }
    CK_SESSION_HANDLE session;
    check(f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &session), "C_OpenSession");
    check(f->C_Login(session, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin)), "C_Login");
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_LABEL, (void *)label, strlen(label)}};
    CK_OBJECT_HANDLE key;
    CK_ULONG nkeys = 0;
    check(f->C_FindObjectsInit(session, tmpl, 2), "C_FindObjectsInit");
    check(f->C_FindObjects(session, &key, 1, &nkeys), "C_FindObjects");
    check(f->C_FindObjectsFinal(session), "C_FindObjectsFinal");
    if (nkeys != 1) { fprintf(stderr, "no private key labelled %s\n", label); return 1; }

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
    CK_MECHANISM mech = {rsa ? CKM_SHA1_RSA_PKCS : CKM_ECDSA, NULL, 0};
    unsigned char sig[512];
    double start = cpu_now();
    for (long i = 0; i < count; i++) {
        unsigned char digest[SHA_DIGEST_LENGTH];
        CK_BYTE_PTR input = (CK_BYTE_PTR)policies[i];
        CK_ULONG inlen = lengths[i];
        if (!rsa) { SHA1((const unsigned char *)policies[i], lengths[i], digest); input = digest; inlen = sizeof digest; }
        CK_ULONG len = sizeof sig;
        check(f->C_SignInit(session, &mech, key), "C_SignInit");
        check(f->C_Sign(session, input, inlen, sig, &len), "C_Sign");
    }
    double cpu = cpu_now() - start;
    printf("{\"signatures\":%ld,\"cpu_s\":%.6f,\"us_per_signature\":%.3f}\n", count, cpu, cpu / count * 1e6);
    f->C_Logout(session);
    f->C_CloseSession(session);
    f->C_Finalize(NULL);
    return 0;
}
