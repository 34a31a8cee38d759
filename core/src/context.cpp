// The current execution context of each thread (see context.h).
#include "edgetune/core/context.h"

namespace edgetune {

namespace {
// Null until a scope is installed on this thread.
thread_local Context* t_current = nullptr;

Context& default_context() {
  thread_local Context d;
  return d;
}
}  // namespace

Context& current_context() { return t_current != nullptr ? *t_current : default_context(); }

ContextScope::ContextScope(Context& context) : previous_(t_current) { t_current = &context; }

ContextScope::~ContextScope() { t_current = previous_; }

}  // namespace edgetune
