/* test_tree.c - the AVL tree against a sorted reference. */
#include <stdlib.h>

#include "tree.h"
#include "unit.h"

struct item {
    struct jinn_tree_node node;
    int key;
};

static int cmp(const struct jinn_tree_node *a, const struct jinn_tree_node *b)
{
    int x = jinn_tree_entry(a, struct item, node)->key;
    int y = jinn_tree_entry(b, struct item, node)->key;
    return (x > y) - (x < y);
}

static int check_balanced(const struct jinn_tree_node *n)
{
    int l, r;
    if (n == NULL) {
        return 0;
    }
    l = check_balanced(n->left);
    r = check_balanced(n->right);
    if (l < 0 || r < 0 || abs(l - r) > 1 || n->height != (l > r ? l : r) + 1) {
        return -1;
    }
    return n->height;
}

TEST(tree_random_operations_match_reference)
{
    enum { N = 2000 };
    static struct item items[N];
    static char present[N];
    struct jinn_tree t;
    unsigned seed = 7;
    jinn_tree_init(&t, cmp);
    for (int i = 0; i < N; i++) {
        items[i].key = i;
    }
    for (int step = 0; step < 20000; step++) {
        int k = rand_r(&seed) % N;
        if (rand_r(&seed) % 3) {
            struct jinn_tree_node *dup = jinn_tree_insert(&t, &items[k].node);
            CHECK(present[k] ? dup == &items[k].node : dup == NULL);
            present[k] = 1;
        } else {
            struct jinn_tree_node *gone = jinn_tree_remove(&t, &items[k].node);
            CHECK(present[k] ? gone == &items[k].node : gone == NULL);
            present[k] = 0;
        }
    }
    CHECK(check_balanced(t.root) >= 0);
    size_t count = 0;
    for (int i = 0; i < N; i++) {
        count += (size_t)present[i];
        CHECK((jinn_tree_find(&t, &items[i].node) != NULL) == present[i]);
    }
    CHECK_INT(t.count, count);
    /* Seek from every key walks the rest in order. */
    for (int from = 0; from < N; from += 97) {
        struct item probe = {.key = from};
        struct jinn_tree_iter it;
        int expect = from;
        for (struct jinn_tree_node *n = jinn_tree_seek(&t, &probe.node, &it); n;
             n = jinn_tree_next(&it)) {
            int k = jinn_tree_entry(n, struct item, node)->key;
            while (expect < N && !present[expect]) {
                expect++;
            }
            CHECK_INT(k, expect);
            expect++;
        }
        while (expect < N && !present[expect]) {
            expect++;
        }
        CHECK_INT(expect, N);
    }
    CHECK(jinn_tree_seek(&t, NULL, &(struct jinn_tree_iter){0}) == jinn_tree_first(&t));
}
