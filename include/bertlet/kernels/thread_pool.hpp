// bertlet — a small intra-op thread pool: n - 1 workers plus the calling thread.
//
// Workers sleep on a condition variable between jobs (no spinning while idle), never set affinity and never read
// /proc or /sys. A job is `ntasks` independent tasks claimed through an atomic counter; run() returns when all are
// done. One job runs at a time: concurrent callers of the same pool are serialized (each still gets correct
// results). Tasks receive (task index, thread slot 0..size()-1) so callers can hand each thread its own scratch.
#pragma once

#include <atomic>
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
            ++generation_;
        }
        wake_.notify_all();
        work(0);
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
            if (++finished_ == workers_.size()) done_.notify_one();
        }
    }

    std::vector<std::thread> workers_;
    std::mutex job_mu_;  // one job at a time
    std::mutex mu_;
    std::condition_variable wake_, done_;
    bool stop_ = false;
    std::size_t generation_ = 0, finished_ = 0, ntasks_ = 0;
    std::atomic<std::size_t> next_{0};
    void* ctx_ = nullptr;
    void (*call_)(void*, std::size_t, std::size_t) = nullptr;
};

}  // namespace bertlet::detail
