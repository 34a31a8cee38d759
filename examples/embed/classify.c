/* A minimal app that embeds edgetune through its C ABI: opens a model (and an adapter or run
 * folder), then classifies each line of standard input, printing "label<TAB>probability<TAB>text".
 *
 *   edgetune_classify MODEL_DIR [ADAPTER_DIR] < sentences.txt
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgetune/c_api.h"

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s MODEL_DIR [ADAPTER_DIR] < lines\n", argv[0]);
    return 2;
  }
  char err[1024];
  edgetune_classifier* clf = NULL;
  if (edgetune_open(argv[1], argc == 3 ? argv[2] : NULL, "q8", &clf, err, sizeof err) != EDGETUNE_OK) {
    fprintf(stderr, "edgetune_classify: %s\n", err);
    return 1;
  }
  const int k = edgetune_num_labels(clf);
  float* probs = malloc(sizeof(float) * (size_t)k);
  char line[8192];
  int status = 0;
  while (fgets(line, sizeof line, stdin)) {
    line[strcspn(line, "\r\n")] = '\0';
    const char* texts[1] = {line};
    if (edgetune_predict(clf, texts, 1, probs, err, sizeof err) != EDGETUNE_OK) {
      fprintf(stderr, "edgetune_classify: %s\n", err);
      status = 1;
      break;
    }
    int best = 0;
    for (int j = 1; j < k; ++j) {
      if (probs[j] > probs[best]) best = j;
    }
    printf("%s\t%.4f\t%s\n", edgetune_label(clf, best), probs[best], line);
  }
  free(probs);
  edgetune_close(clf);
  return status;
}
