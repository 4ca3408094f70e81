/*
 * exception_leak: an item processor that allocates a work buffer with new[], then calls a
 * validator that throws for every fourth item; the delete[] after the call never runs on a
 * throw, and the caller catches the exception and carries on.
 */
#include <cstring>
#include <stdexcept>

#include "scenario.h"

static const unsigned ITEM_SIZE = 2048;

class rejected_item : public std::runtime_error {
public:
    rejected_item() : std::runtime_error("rejected") {}
};

__attribute__((noinline)) static void validate_item(unsigned n, const char *buf)
{
    if (n % 4 == 3 && buf[0] == static_cast<char>(n & 0xff))
        throw rejected_item();
}

__attribute__((noinline)) static unsigned process_item(unsigned n)
{
    char *buf = new char[ITEM_SIZE];
    std::memset(buf, static_cast<int>(n & 0xff), ITEM_SIZE);
    validate_item(n, buf);
    unsigned sum = static_cast<unsigned char>(buf[n % ITEM_SIZE]);
    delete[] buf;
    return sum;
}

int main(int argc, char **argv)
{
    struct ticker ticker;
    unsigned long long rejected = 0;
    unsigned long checksum = 0;
    unsigned n = 0;

    ticker_start(&ticker, scenario_seconds(argc, argv), 2 * 1000 * 1000);
    while (ticker_wait(&ticker)) {
        try {
            checksum += process_item(n);
        } catch (const rejected_item &) {
            rejected++;
        }
        n++;
    }
    SCENARIO_ESCAPE(&checksum);
    scenario_summary("exception_leak", "process_item", rejected * ITEM_SIZE);
    return 0;
}
