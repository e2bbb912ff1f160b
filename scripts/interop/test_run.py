"""Tests of the interop matrix's pure checks (run.py): each verdict the matrix can give, from
synthetic client runs and counter readings, with no cluster and no SOAP stack.

    python3 -m unittest discover -s scripts/interop -p 'test_*.py'
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run  # noqa: E402

METRICS = """# HELP switchboard_routed_requests_total Requests answered by an endpoint.
# TYPE switchboard_routed_requests_total counter
switchboard_routed_requests_total {routed}
switchboard_route_errors_total{{code="contract_not_found"}} {not_found}
switchboard_route_errors_total{{code="invalid_action"}} 0
switchboard_route_decisions_total{{rule="soapaction"}} {soapaction}
switchboard_route_decisions_total{{rule="path"}} {path}
switchboard_route_decisions_total{{rule="body-namespace"}} {body}
"""


def reading(routed=0, not_found=0, soapaction=0, path=0, body=0):
    return run.read_metrics(
        METRICS.format(routed=routed, not_found=not_found, soapaction=soapaction, path=path, body=body)
    )


def seen(decisions=None, errors=None):
    return {"decisions": decisions or {}, "errors": errors or {}, "routed": sum((decisions or {}).values())}


class Counters(unittest.TestCase):
    def test_reads_the_counters_and_what_rose(self):
        before = reading(routed=4, path=3, body=1)
        after = reading(routed=6, not_found=1, path=4, body=2)
        self.assertEqual(before["decisions"], {"soapaction": 0, "path": 3, "body-namespace": 1})
        self.assertEqual(
            run.counted(before, after),
            {"decisions": {"path": 1, "body-namespace": 1}, "errors": {"contract_not_found": 1}, "routed": 2},
        )

    def test_metrics_without_the_counters_are_an_error_not_an_empty_reading(self):
        with self.assertRaises(ValueError):
            run.read_metrics("switchboard_routed_requests_total 3\n")


class Calls(unittest.TestCase):
    def test_the_sum_through_exactly_the_expected_rules_passes(self):
        verdict = run.judge_call(0, "5\n", "", seen({"path": 1, "body-namespace": 1}), run.BY_ROOT)
        self.assertEqual(verdict, run.Verdict(run.PASS, ""))

    def test_the_sum_through_another_rule_is_a_wrong_rule(self):
        verdict = run.judge_call(0, "5\n", "", seen({"path": 1, "soapaction": 1}), run.BY_ROOT)
        self.assertEqual(verdict.kind, run.WRONG_RULE)
        self.assertIn("soapaction", verdict.detail)

    def test_a_missing_or_an_extra_decision_is_a_wrong_rule(self):
        self.assertEqual(run.judge_call(0, "5", "", seen({"path": 1}), run.BY_PATH).kind, run.WRONG_RULE)
        self.assertEqual(run.judge_call(0, "5", "", seen({"path": 3}), run.BY_PATH).kind, run.WRONG_RULE)
        self.assertEqual(run.judge_call(0, "5", "", seen({}), run.NO_WSDL).kind, run.WRONG_RULE)

    def test_another_number_is_a_wrong_answer(self):
        verdict = run.judge_call(0, "6\n", "", seen({"body-namespace": 1}), run.NO_WSDL)
        self.assertEqual(verdict.kind, run.WRONG_ANSWER)

    def test_an_error_from_the_router_is_unrouted_whatever_the_client_did(self):
        errors = {"contract_not_found": 1}
        for returncode, stdout, stderr in [
            (3, "fault: s:Client no contract\n", ""),
            (1, "", "Traceback (most recent call last):\n  ...\nrequests.exceptions.HTTPError: 404\n"),
            (255, "", "PHP Fatal error: Uncaught SoapFault\n"),
            (0, "5\n", ""),
            (None, "", ""),
        ]:
            verdict = run.judge_call(returncode, stdout, stderr, seen({"path": 1}, errors), run.BY_PATH)
            self.assertEqual(verdict.kind, run.UNROUTED, (returncode, stdout, stderr))
            self.assertIn("contract_not_found", verdict.detail)

    def test_a_fault_the_router_did_not_answer_is_the_services(self):
        verdict = run.judge_call(3, "fault: soap:Server oops\n", "", seen({"path": 2}), run.BY_PATH)
        self.assertEqual(verdict, run.Verdict(run.SERVICE_FAULT, "fault: soap:Server oops"))

    def test_a_client_that_dies_without_an_error_from_the_router_crashed(self):
        traceback = "Traceback (most recent call last):\n  File \"x\", line 1\nZeroDivisionError: division by zero\n"
        verdict = run.judge_call(1, "", traceback, seen({"path": 2}), run.BY_PATH)
        self.assertEqual(verdict.kind, run.CRASHED)
        self.assertEqual(verdict.detail, "exit 1: traceback: ZeroDivisionError: division by zero")
        self.assertEqual(run.judge_call(255, "", "", seen(), run.BY_PATH), run.Verdict(run.CRASHED, "exit 255: no output"))
        self.assertEqual(run.judge_call(None, "", "", seen(), run.BY_PATH).kind, run.CRASHED)

    def test_a_php_fatal_error_is_told_by_its_fatal_error_line_not_its_stack_trace(self):
        stderr = (
            "PHP Fatal error:  Uncaught Error: Call to undefined function f() in /x/php_client.php:9\n"
            "Stack trace:\n#0 {main}\n  thrown in /x/php_client.php on line 9\n"
        )
        verdict = run.judge_call(255, "", stderr, seen({"path": 1}), run.BY_PATH)
        self.assertEqual(verdict.kind, run.CRASHED)
        self.assertIn("Call to undefined function", verdict.detail)

    def test_exit_0_without_a_sum_is_a_crash_not_a_pass(self):
        for stdout in ("", "\n", "ok\n"):
            verdict = run.judge_call(0, stdout, "", seen({"path": 2}), run.BY_PATH)
            self.assertEqual(verdict.kind, run.CRASHED, stdout)


class WcfCalls(unittest.TestCase):
    def test_a_request_made_several_times_counts_that_many_times(self):
        self.assertEqual(run.wanted(run.WCF_SPREAD), {"soapaction": run.WCF_INSTANCE_CALLS + 1})
        self.assertEqual(run.wanted(run.BY_ROOT), {"path": 1, "body-namespace": 1})
        self.assertIn(f"Instance ×{run.WCF_INSTANCE_CALLS} at {run.WCF_PATH} by soapaction", run.explain(run.WCF_SPREAD))

    def test_the_spread_passes_only_with_every_call_by_the_action(self):
        calls = run.WCF_INSTANCE_CALLS + 1
        verdict = run.judge_call(0, "instance: a\n5\n", "", seen({"soapaction": calls}), run.WCF_SPREAD)
        self.assertEqual(verdict.kind, run.PASS)
        self.assertEqual(run.judge_call(0, "5\n", "", seen({"soapaction": calls - 1}), run.WCF_SPREAD).kind, run.WRONG_RULE)
        self.assertEqual(run.judge_call(0, "5\n", "", seen({"soapaction": calls}), run.WCF_SPREAD_WSA).kind, run.WRONG_RULE)

    def test_a_mono_crash_is_told_by_its_exception_not_its_stack_trace(self):
        stderr = (
            "\nUnhandled Exception:\nSystem.NullReferenceException: Object reference not set to an instance of an object\n"
            "  at (wrapper remoting-invoke) Interop.ICalculator.Add(int,int)\n"
            "[ERROR] FATAL UNHANDLED EXCEPTION: System.NullReferenceException: Object reference not set\n"
        )
        verdict = run.judge_call(1, "", stderr, seen({"soapaction": 1}), run.WCF_AT_PATH)
        self.assertEqual(verdict, run.Verdict(run.CRASHED, "exit 1: System.NullReferenceException: Object reference not set to an instance of an object"))

    def test_every_instance_must_answer(self):
        instances = ["w-1", "w-2", "w-3"]
        answered = "instance: w-1\ninstance: w-2\ninstance: w-3\ninstance: w-1\ninstance: w-2\ninstance: w-3\n5\n"
        self.assertEqual(run.judge_spread(answered, instances), run.Verdict(run.PASS, "w-1 ×2, w-2 ×2, w-3 ×2"))
        verdict = run.judge_spread("instance: w-1\ninstance: w-1\ninstance: w-2\n5\n", instances)
        self.assertEqual(verdict.kind, run.INSTANCE_MISSED)
        self.assertIn("w-3 never answered", verdict.detail)
        self.assertEqual(run.judge_spread("instance: other\n5\n", instances).kind, run.INSTANCE_MISSED)

    def test_every_call_must_reach_the_registered_address_with_its_own_to(self):
        addresses = {"w-1": "http://127.0.0.1:4001/Services/CalculatorService.svc", "w-2": "http://127.0.0.1:4002/Services/CalculatorService.svc"}
        good = {
            "w-1": "call Instance at http://127.0.0.1:4001/Services/CalculatorService.svc To none\n",
            "w-2": "call Add at http://127.0.0.1:4002/Services/CalculatorService.svc To http://127.0.0.1:4002/Services/CalculatorService.svc\n",
        }
        self.assertEqual(run.judge_arrivals(good, addresses), run.Verdict(run.PASS, ""))
        self.assertEqual(run.judge_arrivals({"w-1": "", "w-2": ""}, addresses).kind, run.PASS)
        doubled = {"w-1": "call Add at http://127.0.0.1:4001/Services/CalculatorService.svc/Services/CalculatorService.svc To none\n"}
        verdict = run.judge_arrivals(doubled, addresses)
        self.assertEqual(verdict.kind, run.WRONG_ADDRESS)
        self.assertIn("/Services/CalculatorService.svc/Services/CalculatorService.svc", verdict.detail)
        router_to = {"w-2": "call Add at http://127.0.0.1:4002/Services/CalculatorService.svc To http://127.0.0.1:7010/Services/CalculatorService.svc\n"}
        verdict = run.judge_arrivals(router_to, addresses)
        self.assertEqual(verdict.kind, run.WRONG_ADDRESS)
        self.assertIn("To http://127.0.0.1:7010/", verdict.detail)


    def test_a_failing_cell_names_what_the_service_logged_besides_its_calls(self):
        logged = {
            "w-1": "call Add at http://127.0.0.1:4001/Services/CalculatorService.svc To none\n",
            "w-2": "Xml Exception (Dropped Connection?):'<', hexadecimal value 0x3C, is an invalid attribute character.\n",
        }
        self.assertEqual(
            run.service_said(logged),
            "the service logged w-2: Xml Exception (Dropped Connection?):'<', hexadecimal value 0x3C, is an invalid attribute character.",
        )
        self.assertEqual(run.service_said({"w-1": logged["w-1"]}), "")


    def test_an_instance_closed_when_it_unregistered_and_exited(self):
        log = "listening http://127.0.0.1:4001/Services/CalculatorService.svc\nregistered\nunregistered\n"
        self.assertEqual(run.judge_closed(0, log), "unregistered")
        self.assertEqual(run.judge_closed(None, log), f"unregistered, but no exit within {run.DEADLINE:.0f} s")
        self.assertEqual(run.judge_closed(None, "registered\n"), f"no exit within {run.DEADLINE:.0f} s")
        self.assertEqual(run.judge_closed(1, "registered\nSystem.TimeoutException: x\n"), "exit 1: System.TimeoutException: x")
        self.assertEqual(run.judge_closed(0, "registered\n"), "exit 0: registered")

    def test_the_watchdog_line_names_where_mono_stuck(self):
        log = "registered\nunregistered\nwatchdog: shutdown stuck at closing the host; exiting\n"
        self.assertEqual(run.judge_closed(0, log), "unregistered")
        self.assertEqual(run.watchdog(log), "stuck at closing the host")
        self.assertEqual(run.watchdog("registered\nunregistered\n"), "")


SOAP11_GONE = "fault: FaultException code=Client.contract_not_found [http://schemas.xmlsoap.org/soap/envelope/] reason=no contract"
SOAP12_GONE = (
    "fault: FaultException code=Sender [http://www.w3.org/2003/05/soap-envelope] "
    "subcode=contract_not_found [urn:switchboard:error] reason=no contract"
)


class WcfFaults(unittest.TestCase):
    def test_the_routers_code_in_a_soap_1_1_faultcode_or_a_soap_1_2_subcode(self):
        self.assertEqual(run.router_code(SOAP11_GONE), "contract_not_found")
        self.assertEqual(run.router_code(SOAP12_GONE), "contract_not_found")
        server = "fault: FaultException code=Server.no_endpoint_reachable [http://schemas.xmlsoap.org/soap/envelope/] reason=x"
        self.assertEqual(run.router_code(server), "no_endpoint_reachable")
        self.assertEqual(run.fault_code(SOAP11_GONE), "Client.contract_not_found")
        self.assertEqual(run.fault_code(SOAP12_GONE), "Sender/contract_not_found")

    def test_a_fault_without_the_routers_code_has_none(self):
        for line in [
            "fault: FaultException code=Client [http://schemas.xmlsoap.org/soap/envelope/] reason=SOAPAction shall match",
            "fault: FaultException code=Sender [http://www.w3.org/2003/05/soap-envelope] subcode=DestinationUnreachable [http://www.w3.org/2005/08/addressing] reason=x",
            "fault: FaultException code=Other.contract_not_found [urn:x] reason=x",
            "fault: EndpointNotFoundException: There was no endpoint listening at {0}",
            "5",
            "",
        ]:
            self.assertIsNone(run.router_code(line), line)

    def test_gone_when_the_router_answered_and_the_client_got_its_code(self):
        for line in (SOAP11_GONE, SOAP12_GONE):
            verdict = run.judge_wcf_gone(3, line + "\n", "", seen(errors={"contract_not_found": 1}))
            self.assertEqual(verdict.kind, run.PASS, line)
        self.assertEqual(run.judge_wcf_gone(3, SOAP12_GONE, "", seen(errors={"contract_not_found": 1})).detail, "Sender/contract_not_found")

    def test_the_code_must_come_from_the_router(self):
        verdict = run.judge_wcf_gone(3, SOAP11_GONE, "", seen({"soapaction": 1}))
        self.assertNotEqual(verdict.kind, run.PASS)

    def test_what_is_not_gone(self):
        self.assertEqual(run.judge_wcf_gone(0, "5\n", "", seen({"soapaction": 1})).kind, "still delivered")
        other = SOAP11_GONE.replace("contract_not_found", "no_endpoint_reachable")
        verdict = run.judge_wcf_gone(3, other, "", seen(errors={"no_endpoint_reachable": 1}))
        self.assertEqual(verdict.kind, "wrong code")
        # The router's 404 before its faults were 500s: WCF reports no fault at all.
        not_found = "fault: EndpointNotFoundException: There was no endpoint listening at {0} that could accept the message."
        verdict = run.judge_wcf_gone(3, not_found, "", seen(errors={"contract_not_found": 1}))
        self.assertEqual(verdict.kind, "not a FaultException")
        self.assertIn("the router answered contract_not_found", verdict.detail)
        bare = "fault: FaultException code=Client [http://schemas.xmlsoap.org/soap/envelope/] reason=no contract"
        self.assertEqual(run.judge_wcf_gone(3, bare, "", seen(errors={"contract_not_found": 1})).kind, "no code")
        self.assertEqual(run.judge_wcf_gone(None, "", "", seen()).kind, "not a FaultException")


class Removal(unittest.TestCase):
    def test_gone_when_the_router_refuses_every_probe_as_not_found(self):
        answers = {"POST /calc": ("refused", run.GONE_CODE), "POST /": ("refused", run.GONE_CODE)}
        self.assertEqual(run.judge_removed(answers, 0.2).kind, run.PASS)

    def test_a_probe_still_delivered_fails(self):
        answers = {"POST /calc": ("refused", run.GONE_CODE), "POST /": ("delivered", "")}
        verdict = run.judge_removed(answers, 30)
        self.assertEqual(verdict.kind, "still delivered")
        self.assertIn("POST /", verdict.detail)

    def test_another_refusal_or_no_answer_is_not_gone(self):
        for other in [("refused", "no_endpoint_reachable"), ("other", "no answer connection refused")]:
            answers = {"POST /calc": ("refused", run.GONE_CODE), "POST /": other}
            self.assertEqual(run.judge_removed(answers, 30).kind, "not refused as gone", other)

    def test_probe_answers(self):
        self.assertEqual(run.probe_answer(200, "<s:Body><tns:AddResult>5</tns:AddResult>", {}), ("delivered", ""))
        self.assertEqual(
            run.probe_answer(200, '<AddResult xsi:type="xsd:int">5</AddResult>', {}), ("delivered", "")
        )
        self.assertEqual(run.probe_answer(200, "<AddResult>6</AddResult>", {})[0], "other")
        self.assertEqual(
            run.probe_answer(404, "<fault/>", {"x-switchboard-error": "contract_not_found"}),
            ("refused", "contract_not_found"),
        )
        self.assertEqual(run.probe_answer(0, "connection refused", {})[0], "other")


class Delete(unittest.TestCase):
    def test_200_with_the_registration_or_204_passes(self):
        self.assertEqual(run.judge_delete(200, '{"id": "abc", "address": "x"}', "abc").kind, run.PASS)
        self.assertEqual(run.judge_delete(204, "", "abc").kind, run.PASS)

    def test_a_refused_delete_fails(self):
        for status, body in [(404, '{"code": "registration_not_found"}'), (403, "{}"), (0, "timed out"), (200, '{"id": "other"}'), (200, "not json")]:
            self.assertEqual(run.judge_delete(status, body, "abc").kind, "refused", (status, body))


class Expectations(unittest.TestCase):
    def test_every_cell_has_an_expected_rule_and_no_expectation_is_stray(self):
        self.assertEqual(run.missing_expectations(run.CLIENTS, run.SERVICES, run.EXPECTED_RULES), ([], []))

    def test_a_cell_not_run_says_why_and_every_wcf_cell_is_routed_by_the_action(self):
        for cell, expected in run.EXPECTED_RULES.items():
            if isinstance(expected, run.NotRun):
                self.assertTrue(expected.reason, cell)
            elif run.WCF_BASIC in cell or run.WCF_WSA in cell or cell[1] in run.WCF_BINDINGS:
                self.assertLessEqual(set(run.wanted(expected)), {"soapaction", "ws-addressing"}, cell)

    def test_a_missing_cell_is_reported(self):
        partial = dict(run.EXPECTED_RULES)
        del partial[(run.PERL, "PHP SoapServer")]
        partial[("a client", "no service")] = run.NO_WSDL
        missing, stray = run.missing_expectations(run.CLIENTS, run.SERVICES, partial)
        self.assertEqual(missing, [(run.PERL, "PHP SoapServer")])
        self.assertEqual(stray, [("a client", "no service")])


if __name__ == "__main__":
    unittest.main()
