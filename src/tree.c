/* tree.c - see tree.h. Recursive insert and remove; the recursion depth is
 * the tree height, at most ~1.44 log2(n). */
#include "tree.h"

#include <assert.h>

static int height(const struct jinn_tree_node *n) { return n ? n->height : 0; }

static void update(struct jinn_tree_node *n)
{
    int l = height(n->left), r = height(n->right);
    n->height = (l > r ? l : r) + 1;
}

static struct jinn_tree_node *rotate_right(struct jinn_tree_node *n)
{
    struct jinn_tree_node *l = n->left;
    n->left = l->right;
    l->right = n;
    update(n);
    update(l);
    return l;
}

static struct jinn_tree_node *rotate_left(struct jinn_tree_node *n)
{
    struct jinn_tree_node *r = n->right;
    n->right = r->left;
    r->left = n;
    update(n);
    update(r);
    return r;
}

static struct jinn_tree_node *balance(struct jinn_tree_node *n)
{
    int diff;
    update(n);
    diff = height(n->left) - height(n->right);
    if (diff > 1) {
        if (height(n->left->left) < height(n->left->right)) {
            n->left = rotate_left(n->left);
        }
        return rotate_right(n);
    }
    if (diff < -1) {
        if (height(n->right->right) < height(n->right->left)) {
            n->right = rotate_right(n->right);
        }
        return rotate_left(n);
    }
    return n;
}

void jinn_tree_init(struct jinn_tree *t, jinn_tree_cmp cmp)
{
    t->root = NULL;
    t->cmp = cmp;
    t->count = 0;
}

static struct jinn_tree_node *insert(struct jinn_tree *t, struct jinn_tree_node *n,
                                     struct jinn_tree_node *node, struct jinn_tree_node **dup)
{
    int c;
    if (n == NULL) {
        node->left = node->right = NULL;
        node->height = 1;
        t->count++;
        return node;
    }
    c = t->cmp(node, n);
    if (c == 0) {
        *dup = n;
        return n;
    }
    if (c < 0) {
        n->left = insert(t, n->left, node, dup);
    } else {
        n->right = insert(t, n->right, node, dup);
    }
    return *dup ? n : balance(n);
}

struct jinn_tree_node *jinn_tree_insert(struct jinn_tree *t, struct jinn_tree_node *node)
{
    struct jinn_tree_node *dup = NULL;
    t->root = insert(t, t->root, node, &dup);
    return dup;
}

static struct jinn_tree_node *remove_min(struct jinn_tree_node *n, struct jinn_tree_node **min)
{
    if (n->left == NULL) {
        *min = n;
        return n->right;
    }
    n->left = remove_min(n->left, min);
    return balance(n);
}

static struct jinn_tree_node *remove_node(struct jinn_tree *t, struct jinn_tree_node *n,
                                          const struct jinn_tree_node *key,
                                          struct jinn_tree_node **removed)
{
    int c;
    if (n == NULL) {
        return NULL;
    }
    c = t->cmp(key, n);
    if (c < 0) {
        n->left = remove_node(t, n->left, key, removed);
    } else if (c > 0) {
        n->right = remove_node(t, n->right, key, removed);
    } else {
        struct jinn_tree_node *min;
        *removed = n;
        t->count--;
        if (n->right == NULL) {
            return n->left;
        }
        n->right = remove_min(n->right, &min);
        min->left = n->left;
        min->right = n->right;
        return balance(min);
    }
    return *removed ? balance(n) : n;
}

struct jinn_tree_node *jinn_tree_remove(struct jinn_tree *t, const struct jinn_tree_node *key)
{
    struct jinn_tree_node *removed = NULL;
    t->root = remove_node(t, t->root, key, &removed);
    return removed;
}

struct jinn_tree_node *jinn_tree_find(const struct jinn_tree *t, const struct jinn_tree_node *key)
{
    struct jinn_tree_node *n = t->root;
    while (n != NULL) {
        int c = t->cmp(key, n);
        if (c == 0) {
            return n;
        }
        n = c < 0 ? n->left : n->right;
    }
    return NULL;
}

struct jinn_tree_node *jinn_tree_first(const struct jinn_tree *t)
{
    struct jinn_tree_node *n = t->root;
    while (n != NULL && n->left != NULL) {
        n = n->left;
    }
    return n;
}

struct jinn_tree_node *jinn_tree_seek(const struct jinn_tree *t, const struct jinn_tree_node *key,
                                      struct jinn_tree_iter *it)
{
    struct jinn_tree_node *n = t->root;
    it->depth = 0;
    /* The stack holds the ancestors still to visit, in order. */
    while (n != NULL) {
        int c = key ? t->cmp(key, n) : -1;
        if (c <= 0) {
            assert(it->depth < JINN_TREE_MAX_HEIGHT);
            it->stack[it->depth++] = n;
            if (c == 0) {
                break;
            }
            n = n->left;
        } else {
            n = n->right;
        }
    }
    return it->depth ? it->stack[it->depth - 1] : NULL;
}

struct jinn_tree_node *jinn_tree_next(struct jinn_tree_iter *it)
{
    struct jinn_tree_node *n;
    if (it->depth == 0) {
        return NULL;
    }
    n = it->stack[--it->depth]->right;
    while (n != NULL) {
        assert(it->depth < JINN_TREE_MAX_HEIGHT);
        it->stack[it->depth++] = n;
        n = n->left;
    }
    return it->depth ? it->stack[it->depth - 1] : NULL;
}

static void release_subtree(struct jinn_tree_node *n, void (*release)(struct jinn_tree_node *))
{
    while (n != NULL) {
        struct jinn_tree_node *left = n->left, *right = n->right;
        release_subtree(left, release);
        release(n);
        n = right;
    }
}

void jinn_tree_release_all(struct jinn_tree *t, void (*release)(struct jinn_tree_node *))
{
    release_subtree(t->root, release);
    t->root = NULL;
    t->count = 0;
}
