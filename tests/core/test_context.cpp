// The execution context: which one is current on a thread, and that scopes restore it.
#include <catch2/catch.hpp>

#include <thread>

#include "edgetune/core/context.h"

using namespace edgetune;

TEST_CASE("context: a scope makes its context current and restores the previous one", "[context]") {
  Context& outer = current_context();
  Context a, b;
  {
    const ContextScope sa(a);
    REQUIRE(&current_context() == &a);
    {
      const ContextScope sb(b);
      REQUIRE(&current_context() == &b);
    }
    REQUIRE(&current_context() == &a);
  }
  REQUIRE(&current_context() == &outer);
  REQUIRE(a.accountant != b.accountant);
}

TEST_CASE("context: each thread has a default context of its own, with no budget", "[context]") {
  const Context* here = &current_context();
  bool same = true;
  std::shared_ptr<Accountant> there_accountant;
  std::size_t there_budget = 1;
  std::thread t([&] {
    same = &current_context() == here;
    there_accountant = current_context().accountant;
    there_budget = there_accountant->budget();
  });
  t.join();
  REQUIRE_FALSE(same);
  REQUIRE(there_accountant != current_context().accountant);
  REQUIRE(there_budget == 0);
  // The accountant outlives the thread that made it for whoever holds it.
  void* p = there_accountant->allocate(MemCategory::Workspace, 100);
  REQUIRE(there_accountant->live_total() == accounted_bytes(100));
  there_accountant->release(MemCategory::Workspace, p, 100);
  REQUIRE(there_accountant->live_total() == 0);
}

TEST_CASE("context: a scope on one thread is not seen on another", "[context]") {
  Context mine;
  const ContextScope scope(mine);
  bool seen = true;
  std::thread t([&] { seen = &current_context() == &mine; });
  t.join();
  REQUIRE_FALSE(seen);
  REQUIRE(&current_context() == &mine);
}
