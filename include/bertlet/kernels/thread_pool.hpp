// bertlet — a small intra-op thread pool: n - 1 workers plus the calling thread.
//
// Workers sleep on a condition variable between jobs, never set affinity and never read /proc or /sys. Right after
// a job, a worker (and the caller waiting for the workers) polls for at most spin_us microseconds before blocking:
// a forward pass issues ~10 jobs per layer back to back, and a futex wake-up costs tens of microseconds in a VM.
// Once the encoder goes quiet every thread is asleep within spin_us, so an idle pool uses no CPU. A job is `ntasks` independent tasks claimed through an atomic counter; run() returns when all are
// done. One job runs at a time: concurrent callers of the same pool are serialized (each still gets correct
// results). Tasks receive (task index, thread slot 0..size()-1) so callers can hand each thread its own scratch.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace bertlet::detail {

class thread_pool {
public:
    explicit thread_pool(std::size_t threads) {
        const std::size_t workers = threads > 1 ? threads - 1 : 0;
        workers_.reserve(workers);
        for (std::size_t i = 0; i < workers; ++i) workers_.emplace_back([this, i] { worker_loop(i + 1); });
    }
    thread_pool(const thread_pool&) = delete;
    thread_pool& operator=(const thread_pool&) = delete;
    ~thread_pool() {
        {
            std::lock_guard<std::mutex> lk(mu_);
            stop_ = true;
            stop_a_.store(true, std::memory_order_release);
        }
        wake_.notify_all();
        for (auto& w : workers_) w.join();
    }

    std::size_t size() const noexcept { return workers_.size() + 1; }

    /// Runs f(task, slot) for task in [0, ntasks). f must not throw.
    template <class F>
    void run(std::size_t ntasks, F&& f) {
        if (ntasks == 0) return;
        if (workers_.empty() || ntasks == 1) {
            for (std::size_t i = 0; i < ntasks; ++i) f(i, std::size_t{0});
            return;
        }
        std::lock_guard<std::mutex> job(job_mu_);
        using Fn = std::remove_reference_t<F>;
        {
            std::lock_guard<std::mutex> lk(mu_);
            ctx_ = const_cast<void*>(static_cast<const void*>(&f));
            call_ = [](void* c, std::size_t t, std::size_t s) { (*static_cast<Fn*>(c))(t, s); };
            ntasks_ = ntasks;
            next_.store(0, std::memory_order_relaxed);
            finished_ = 0;
            finished_a_.store(0, std::memory_order_relaxed);
            ++generation_;
            generation_a_.store(generation_, std::memory_order_release);
        }
        wake_.notify_all();
        work(0);
        spin_until([&] { return finished_a_.load(std::memory_order_acquire) == workers_.size(); });
        std::unique_lock<std::mutex> lk(mu_);
        done_.wait(lk, [&] { return finished_ == workers_.size(); });
    }

private:
    void work(std::size_t slot) {
        for (;;) {
            const std::size_t t = next_.fetch_add(1, std::memory_order_relaxed);
            if (t >= ntasks_) return;
            call_(ctx_, t, slot);
        }
    }
    void worker_loop(std::size_t slot) {
        std::size_t seen = 0;
        std::unique_lock<std::mutex> lk(mu_);
        for (;;) {
            wake_.wait(lk, [&] { return stop_ || generation_ != seen; });
            if (stop_) return;
            seen = generation_;
            lk.unlock();
            work(slot);
            lk.lock();
            ++finished_;
            finished_a_.store(finished_, std::memory_order_release);
            if (finished_ == workers_.size()) done_.notify_one();
            lk.unlock();
            spin_until([&] {
                return generation_a_.load(std::memory_order_acquire) != seen || stop_a_.load(std::memory_order_acquire);
            });
            lk.lock();
        }
    }

    static constexpr int spin_us = 100;
    /// Polls pred for at most spin_us microseconds (the lock-protected state is then read under the mutex as usual).
    template <class P>
    static void spin_until(P&& pred) {
        const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us);
        for (unsigned i = 0; !pred(); ++i) {
            if ((i & 63) == 63 && std::chrono::steady_clock::now() >= end) return;
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#elif defined(__aarch64__)
            __asm__ __volatile__("yield");
#endif
        }
    }

    std::vector<std::thread> workers_;
    std::mutex job_mu_;  // one job at a time
    std::mutex mu_;
    std::condition_variable wake_, done_;
    bool stop_ = false;
    std::size_t generation_ = 0, finished_ = 0, ntasks_ = 0;
    std::atomic<std::size_t> next_{0};
    std::atomic<std::size_t> generation_a_{0}, finished_a_{0};  // mirrors for the bounded spin (read without the lock)
    std::atomic<bool> stop_a_{false};
    void* ctx_ = nullptr;
    void (*call_)(void*, std::size_t, std::size_t) = nullptr;
};

}  // namespace bertlet::detail
