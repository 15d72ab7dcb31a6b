"""Compliance with NIST SP 800-125B, statically (pure, no kernel): not a feature of the builder
but what reads every feature's ``checks()``.

    recommendations.py  the thirteen recommendations: id, area, section, title
    audit.py            topology -> the audit document (`nlab audit`)
    settings.py         the switch-security settings hardening guides check on virtual switches
    report/             the report a reviewer gets (`nlab report`): the audit, the live
                        verification and the benchmark results as HTML and Markdown
"""
