#!/usr/bin/env python3
"""gen_guest.py N OUT.c - a C guest with N generated functions (for compile
time measurements): each function mixes arithmetic, branches, a loop and a
string, and main() calls every one through a table so none is dropped. It
imports two gojinn host functions like a real function would.
About 400 functions give a ~100 KB module, 5300 a ~1 MB one (clang-14 -O2,
-Wl,--strip-all)."""
import sys

n, out = int(sys.argv[1]), sys.argv[2]
with open(out, "w") as f:
    f.write('#include <stdio.h>\n#include <string.h>\n#include <stdint.h>\n\n'
            '__attribute__((import_module("gojinn"), import_name("host_kv_get")))\n'
            'int host_kv_get(const char *k, int kl, char *o, int om);\n'
            '__attribute__((import_module("gojinn"), import_name("host_log")))\n'
            'void host_log(int level, const char *p, int l);\n\n')
    for i in range(n):
        f.write(f'''__attribute__((noinline)) static uint32_t f{i}(uint32_t x, const char *s)
{{
    uint32_t acc = {i * 2654435761 % 4294967296}u ^ x;
    for (size_t j = 0; s[j]; j++) {{
        acc = (acc << 5) + acc + (uint8_t)s[j];
        if (acc % {i % 13 + 3} == {i % 3}) acc ^= 0x{(i * 40503) & 0xffff:x};
        else if ((acc & 0xff) > {i % 200 + 20}) acc += x * {i % 97 + 1};
    }}
    switch (acc % 5) {{
    case 0: acc = acc * {i % 31 + 2} + 7; break;
    case 1: acc ^= acc >> {i % 16 + 1}; break;
    case 2: acc -= {i}; break;
    default: acc += (uint32_t)strlen("generated function {i} of {n}");
    }}
    return acc;
}}
''')
    f.write('static uint32_t (*const table[])(uint32_t, const char *) = {\n')
    f.write(''.join(f'    f{i},\n' for i in range(n)))
    f.write('};\n\nint main(int argc, char **argv)\n{\n'
            '    char buf[64];\n    uint32_t acc = (uint32_t)argc;\n'
            '    int n = host_kv_get("k", 1, buf, sizeof buf);\n'
            '    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)\n'
            '        acc += table[i](acc, argc > 1 ? argv[1] : "seed");\n'
            '    host_log(1, "done", 4);\n'
            '    printf("{\\"status\\":200,\\"body\\":\\"%u %d\\"}", acc, n);\n'
            '    return 0;\n}\n')
