"""Write data/numina_tir_sample.jsonl: the project's own small sample in the NuminaMath-TIR schema.

Run once from the project's root (`.venv/bin/python data/make_numina_sample.py`); the output is
committed. Every problem here is written for this project. Each solution's ```output blocks hold
what its ```python code really prints: the code is run in a fresh interpreter and its stdout
pasted in, and the boxed answer is read from that output, never typed by hand.

Schema (as in the real data set): problem, solution, messages (user turn = problem, assistant
turn = solution). Python's standard library only, so the outputs are the same everywhere.
"""

import json
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "numina_tir_sample.jsonl"


def run(code):
    """What `code` prints in a fresh interpreter; a failing block is a bug in this script."""
    done = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise RuntimeError(f"sample code failed:\n{code}\n{done.stderr}")
    return done.stdout


def block(code, output):
    return f"```python\n{code.strip()}\n```\n```output\n{output.rstrip()}\n```\n"


def solve(problem, steps, conclusion):
    """A NuminaMath-TIR row: `steps` are (text before the code, code); the last code's last
    printed line is the answer, which replaces ANSWER in `conclusion`."""
    parts, output = [], ""
    for text, code in steps:
        output = run(code)
        parts.append(f"{text.strip()}\n{block(code, output)}")
    answer = output.strip().splitlines()[-1].strip()
    parts.append(conclusion.replace("ANSWER", answer).strip())
    solution = "".join(parts)
    return {
        "problem": problem,
        "solution": solution,
        "messages": [
            {"content": problem, "role": "user"},
            {"content": solution, "role": "assistant"},
        ],
    }


def digit_sum(base, exp):
    return solve(
        f"What is the sum of the digits of ${base}^{{{exp}}}$?",
        [
            (
                f"The number ${base}^{{{exp}}}$ has too many digits to add by hand, but Python's "
                "integers are exact, so we can write it out and add its digits.",
                f"n = {base}**{exp}\nprint(len(str(n)))\nprint(sum(int(d) for d in str(n)))",
            )
        ],
        f"The first line is the number of digits; the second is their sum. The sum of the digits "
        f"of ${base}^{{{exp}}}$ is $\\boxed{{ANSWER}}$.",
    )


def power_mod(base, exp, mod):
    return solve(
        f"Find the remainder when ${base}^{{{exp}}}$ is divided by ${mod}$.",
        [
            (
                f"Powers of ${base}$ modulo ${mod}$ repeat with a short period. Let us list the first "
                "few residues to see the cycle, then compute the remainder directly with fast modular "
                "exponentiation.",
                f"residues = [pow({base}, k, {mod}) for k in range(1, 13)]\nprint(residues)\n"
                f"print(pow({base}, {exp}, {mod}))",
            )
        ],
        "The residues cycle as shown, and the exponent lands on the residue printed last. "
        "The remainder is $\\boxed{ANSWER}$.",
    )


def divisible_count(n, a, b):
    return solve(
        f"How many integers from $1$ to ${n}$ inclusive are divisible by ${a}$ or by ${b}$?",
        [
            (
                "By inclusion-exclusion the count is $\\lfloor n/a \\rfloor + \\lfloor n/b \\rfloor - "
                "\\lfloor n/\\operatorname{lcm}(a,b) \\rfloor$. Let us evaluate the formula.",
                f"from math import lcm\nn, a, b = {n}, {a}, {b}\n"
                "print(n // a + n // b - n // lcm(a, b))",
            ),
            (
                "To be safe, we also count by brute force.",
                f"print(sum(1 for k in range(1, {n} + 1) if k % {a} == 0 or k % {b} == 0))",
            ),
        ],
        "Both methods agree, so the number of such integers is $\\boxed{ANSWER}$.",
    )


def divisor_count(n):
    return solve(
        f"How many positive divisors does ${n}$ have?",
        [
            (
                "If $n = \\prod p_i^{e_i}$ then $n$ has $\\prod (e_i + 1)$ divisors. We factor the "
                "number and apply this formula.",
                f"n = {n}\nfactors = {{}}\nm, p = n, 2\nwhile p * p <= m:\n"
                "    while m % p == 0:\n        factors[p] = factors.get(p, 0) + 1\n        m //= p\n"
                "    p += 1\nif m > 1:\n    factors[m] = factors.get(m, 0) + 1\nprint(factors)\n"
                "count = 1\nfor e in factors.values():\n    count *= e + 1\nprint(count)",
            )
        ],
        f"From the factorization, ${n}$ has $\\boxed{{ANSWER}}$ positive divisors.",
    )


def lattice_pairs(a, b, n):
    return solve(
        f"How many ordered pairs of positive integers $(x, y)$ satisfy ${a}x + {b}y = {n}$?",
        [
            (
                f"For each positive $x$ with ${a}x < {n}$, the value $y = ({n} - {a}x)/{b}$ must be a "
                "positive integer. We check every candidate $x$.",
                f"pairs = [(x, ({n} - {a} * x) // {b}) for x in range(1, {n} // {a} + 1)\n"
                f"         if {n} - {a} * x > 0 and ({n} - {a} * x) % {b} == 0]\n"
                "print(pairs[:5])\nprint(len(pairs))",
            )
        ],
        "The first few pairs are shown above; counting all of them gives "
        "$\\boxed{ANSWER}$ ordered pairs.",
    )


def fibonacci_mod(n, mod):
    return solve(
        f"The Fibonacci numbers are defined by $F_1 = F_2 = 1$ and $F_{{n+2}} = F_{{n+1}} + F_n$. "
        f"Find the remainder when $F_{{{n}}}$ is divided by ${mod}$.",
        [
            (
                "We iterate the recurrence, keeping only remainders so the numbers stay small.",
                f"a, b = 1, 1\nfor _ in range({n} - 2):\n    a, b = b, (a + b) % {mod}\nprint(b)",
            )
        ],
        f"The remainder of $F_{{{n}}}$ modulo ${mod}$ is $\\boxed{{ANSWER}}$.",
    )


def no_two_consecutive(n, k):
    return solve(
        f"In how many ways can ${k}$ numbers be chosen from $\\{{1, 2, \\ldots, {n}\\}}$ so "
        "that no two chosen numbers are consecutive?",
        [
            (
                f"A classical bijection shows the answer is $\\binom{{{n} - {k} + 1}}{{{k}}}$. "
                "We compute it and also check it by listing every subset.",
                f"from math import comb\nprint(comb({n} - {k} + 1, {k}))",
            ),
            (
                "Now the brute-force count over all subsets:",
                f"from itertools import combinations\n"
                f"print(sum(1 for c in combinations(range(1, {n} + 1), {k})\n"
                "          if all(c[i + 1] - c[i] > 1 for i in range(len(c) - 1))))",
            ),
        ],
        "The formula and the enumeration agree: there are $\\boxed{ANSWER}$ ways.",
    )


def trailing_zeros(n):
    return solve(
        f"How many zeros does ${n}!$ end with?",
        [
            (
                f"The number of trailing zeros is the exponent of $5$ in ${n}!$, which by Legendre's "
                f"formula is $\\sum_{{k \\ge 1}} \\lfloor {n}/5^k \\rfloor$. We compute it and compare "
                "with the factorial itself.",
                f"from math import factorial\nz, p = 0, 5\nwhile p <= {n}:\n    z += {n} // p\n"
                f"    p *= 5\ns = str(factorial({n}))\nprint(len(s) - len(s.rstrip('0')))\nprint(z)",
            )
        ],
        f"Both counts agree, so ${n}!$ ends with $\\boxed{{ANSWER}}$ zeros.",
    )


def prime_count(n):
    return solve(
        f"How many prime numbers are less than ${n}$?",
        [
            (
                "We sieve the integers below the bound with the sieve of Eratosthenes and count what "
                "remains.",
                f"n = {n}\nsieve = [True] * n\nsieve[0] = sieve[1] = False\n"
                "for p in range(2, int(n ** 0.5) + 1):\n    if sieve[p]:\n"
                "        sieve[p * p::p] = [False] * len(range(p * p, n, p))\nprint(sum(sieve))",
            )
        ],
        f"There are $\\boxed{{ANSWER}}$ primes less than ${n}$.",
    )


def crt(r1, m1, r2, m2, r3, m3):
    return solve(
        f"Find the smallest positive integer $n$ that leaves remainder ${r1}$ when divided by "
        f"${m1}$, remainder ${r2}$ when divided by ${m2}$, and remainder ${r3}$ when divided by "
        f"${m3}$.",
        [
            (
                "The moduli are pairwise coprime, so by the Chinese remainder theorem there is exactly "
                "one solution modulo their product. We search that range.",
                f"M = {m1} * {m2} * {m3}\n"
                f"n = next(k for k in range(1, M + 1) if k % {m1} == {r1} and k % {m2} == {r2} "
                f"and k % {m3} == {r3})\nprint(M)\nprint(n)",
            )
        ],
        "The product of the moduli is printed first; the smallest such integer is "
        "$\\boxed{ANSWER}$.",
    )


def digit_sum_count(digits, total):
    return solve(
        f"How many {digits}-digit positive integers have digits that add up to ${total}$?",
        [
            (
                "We count with a small dynamic program over the digits: the leading digit runs from "
                "$1$ to $9$, every other digit from $0$ to $9$.",
                f"ways = {{s: 1 for s in range(1, 10)}}\nfor _ in range({digits} - 1):\n"
                "    new = {}\n    for s, w in ways.items():\n        for d in range(10):\n"
                "            new[s + d] = new.get(s + d, 0) + w\n    ways = new\n"
                f"print(ways.get({total}, 0))",
            )
        ],
        f"So $\\boxed{{ANSWER}}$ {digits}-digit integers have digit sum ${total}$.",
    )


def recurrence(a1, step, n):
    return solve(
        f"A sequence has $a_1 = {a1}$ and $a_{{k+1}} = a_k + {step}k$ for $k \\ge 1$. "
        f"Find $a_{{{n}}}$.",
        [
            (
                f"Summing the differences, $a_n = {a1} + {step}\\cdot\\frac{{(n-1)n}}{{2}}$. "
                "We check the closed form against the recurrence.",
                f"a = {a1}\nfor k in range(1, {n}):\n    a += {step} * k\n"
                f"print(a == {a1} + {step} * ({n} - 1) * {n} // 2)\nprint(a)",
            )
        ],
        f"The closed form holds, and $a_{{{n}}} = \\boxed{{ANSWER}}$.",
    )


def square_sum_mod(n, mod):
    return solve(
        f"Find the remainder when $1^2 + 2^2 + \\cdots + {n}^2$ is divided by ${mod}$.",
        [
            (
                "The sum of the first $n$ squares is $\\frac{n(n+1)(2n+1)}{6}$. We evaluate it and "
                "take the remainder, checking against a direct sum.",
                f"n = {n}\ns = n * (n + 1) * (2 * n + 1) // 6\n"
                "print(s == sum(k * k for k in range(1, n + 1)))\n"
                f"print(s % {mod})",
            )
        ],
        "The formula matches the direct sum, and the remainder is $\\boxed{ANSWER}$.",
    )


def gcd_mersenne(a, b):
    return solve(
        f"What is the greatest common divisor of $2^{{{a}}} - 1$ and $2^{{{b}}} - 1$?",
        [
            (
                "A known identity says $\\gcd(2^a - 1, 2^b - 1) = 2^{\\gcd(a, b)} - 1$. We verify it "
                "numerically.",
                f"from math import gcd\nprint(gcd({a}, {b}))\nprint(gcd(2**{a} - 1, 2**{b} - 1))",
            )
        ],
        f"Since $\\gcd({a}, {b})$ is printed first, the identity gives the second number: "
        "$\\boxed{ANSWER}$.",
    )


ROWS = [
    (digit_sum, [(2, 50), (3, 40), (7, 25), (5, 60)]),
    (power_mod, [(3, 100, 7), (2, 2026, 11), (5, 123, 13), (7, 999, 10)]),
    (divisible_count, [(1000, 6, 10), (2026, 4, 7), (500, 12, 18)]),
    (divisor_count, [(720,), (2026,), (10080,), (3600,)]),
    (lattice_pairs, [(3, 5, 200), (2, 7, 150), (4, 9, 400)]),
    (fibonacci_mod, [(100, 1000), (2026, 100), (500, 97)]),
    (no_two_consecutive, [(12, 4), (15, 5), (10, 3)]),
    (trailing_zeros, [(100,), (1000,), (625,)]),
    (prime_count, [(1000,), (5000,), (20000,)]),
    (crt, [(2, 3, 3, 5, 2, 7), (1, 4, 2, 5, 3, 7), (5, 8, 4, 9, 6, 11)]),
    (digit_sum_count, [(3, 10), (4, 10), (4, 20)]),
    (recurrence, [(1, 2, 50), (3, 3, 40), (10, 4, 25)]),
    (square_sum_mod, [(100, 1000), (2026, 9973), (50, 101)]),
    (gcd_mersenne, [(12, 18), (35, 21), (40, 64)]),
]


def main():
    rows = [make(*args) for make, params in ROWS for args in params]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {len(rows)} rows to {OUT}")


if __name__ == "__main__":
    main()
