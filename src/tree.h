/* tree.h - an intrusive AVL tree: ordered maps for the state machine.
 *
 * Deterministic (no randomness, no hashing), O(log n) insert, remove and
 * seek, and in-order iteration from any position, which is what ordered
 * listings, prefix scans, expiry queues and snapshots need. Nodes are
 * embedded in the caller's structs; the tree never allocates. */
#ifndef JINN_TREE_H
#define JINN_TREE_H

#include <stddef.h>

#define JINN_TREE_MAX_HEIGHT 64 /* AVL height bound for any 64-bit count */

struct jinn_tree_node {
    struct jinn_tree_node *left, *right;
    int height;
};

/* <0, 0, >0 like strcmp. */
typedef int (*jinn_tree_cmp)(const struct jinn_tree_node *a, const struct jinn_tree_node *b);

struct jinn_tree {
    struct jinn_tree_node *root;
    jinn_tree_cmp cmp;
    size_t count;
};

struct jinn_tree_iter {
    struct jinn_tree_node *stack[JINN_TREE_MAX_HEIGHT];
    int depth;
};

void jinn_tree_init(struct jinn_tree *t, jinn_tree_cmp cmp);
/* Inserts node; returns NULL, or the equal node already present (then node
 * is not inserted). */
struct jinn_tree_node *jinn_tree_insert(struct jinn_tree *t, struct jinn_tree_node *node);
/* Removes the node equal to key; returns it or NULL. */
struct jinn_tree_node *jinn_tree_remove(struct jinn_tree *t, const struct jinn_tree_node *key);
struct jinn_tree_node *jinn_tree_find(const struct jinn_tree *t, const struct jinn_tree_node *key);
/* Calls release on every node (in no particular order) and empties the
 * tree; release may free the node. */
void jinn_tree_release_all(struct jinn_tree *t, void (*release)(struct jinn_tree_node *));

/* The smallest node, or NULL. */
struct jinn_tree_node *jinn_tree_first(const struct jinn_tree *t);

/* Positions it at the first node >= key (key NULL: the first node) and
 * returns it; then jinn_tree_next walks in order. NULL at the end. The tree
 * must not change while iterating. */
struct jinn_tree_node *jinn_tree_seek(const struct jinn_tree *t, const struct jinn_tree_node *key,
                                      struct jinn_tree_iter *it);
struct jinn_tree_node *jinn_tree_next(struct jinn_tree_iter *it);

#define jinn_tree_entry(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#endif
