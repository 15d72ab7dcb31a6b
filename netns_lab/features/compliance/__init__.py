"""Compliance with NIST SP 800-125B: not a feature of the builder but what reads every feature's
``checks()`` statically (pure, no kernel), `verify/`, the live check of a running lab, and the
report built from both.

    recommendations.py  the thirteen recommendations: id, area, section, title
    audit.py            topology -> the audit document (`nlab audit`)
    settings.py         the switch-security settings hardening guides check on virtual switches
    verify/             a running lab against its model with real packets and its kernel tables
                        (`nlab verify`; `verify.verify(lab, evidence)` -> the verify document)
    report/             the report a reviewer gets (`nlab report`): the audit, the live
                        verification and the benchmark results as HTML and Markdown
"""
