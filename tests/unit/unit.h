/* unit.h - a tiny unit test harness.
 *
 * TEST(name) { ... } registers a test; CHECK* fail the current test and
 * return from it. `build/test/unit [substring]` runs the tests whose name
 * contains the substring and ends with "unit: N passed, N failed". */
#ifndef JINN_UNIT_H
#define JINN_UNIT_H

#include <stdio.h>
#include <string.h>

void unit_register(const char *name, void (*fn)(void));
void unit_fail(const char *file, int line, const char *what);

/* Runs fn(arg) in a forked child with logging at error level and stderr
 * captured into out (NUL-terminated); returns the child's wait status, -1
 * if it could not start. For paths that stop the process (a fatal apply,
 * an untrusted raft state), which can only be observed from outside. fn
 * returning means the node would have carried on: the child exits 0. */
int unit_run_child(void (*fn)(void *), void *arg, char *out, size_t cap);

#define TEST(name)                                                                        \
    static void name(void);                                                                \
    __attribute__((constructor)) static void register_##name(void)                        \
    {                                                                                       \
        unit_register(#name, name);                                                         \
    }                                                                                       \
    static void name(void)

#define CHECK(cond)                                                                       \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            unit_fail(__FILE__, __LINE__, #cond);                                           \
            return;                                                                         \
        }                                                                                   \
    } while (0)

#define CHECK_INT(a, b)                                                                    \
    do {                                                                                    \
        long long a_ = (long long)(a), b_ = (long long)(b);                                 \
        if (a_ != b_) {                                                                     \
            char m_[256];                                                                   \
            snprintf(m_, sizeof m_, "%s == %s (%lld != %lld)", #a, #b, a_, b_);             \
            unit_fail(__FILE__, __LINE__, m_);                                              \
            return;                                                                         \
        }                                                                                   \
    } while (0)

#define CHECK_STR(a, b)                                                                    \
    do {                                                                                    \
        const char *a_ = (a), *b_ = (b);                                                    \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) {                              \
            char m_[512];                                                                   \
            snprintf(m_, sizeof m_, "%s == %s (\"%s\" != \"%s\")", #a, #b,                  \
                     a_ ? a_ : "(null)", b_ ? b_ : "(null)");                               \
            unit_fail(__FILE__, __LINE__, m_);                                              \
            return;                                                                         \
        }                                                                                   \
    } while (0)

#endif
