"""Issue 15: PII detection on text this project did not write.

The misses the issue lists, as regression tests written with other names and numbers than
the issue's (the rules are general, not the strings), the NER model loading offline without
PyTorch, the policy's new coverage (HIPAA places and ages, GDPR dates of birth, phone regions),
precision on text without PII, and floors on the independent labelled sets.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.pii import Detector
from streams.pii_eval import evaluate, load
from streams.policy import KeyRing, PolicyConfig, SourcePolicy, decide

ROOT = Path(__file__).parents[2]
INDEPENDENT = ROOT / "tests" / "data" / "pii_independent"


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector()


def found(detector: Detector, text: str) -> set[tuple[str, str]]:
    return {(f.entity_type, text[f.start:f.end]) for f in detector.analyze(text)}


@pytest.mark.parametrize("text, name", [
    ("Priya is very reliable.", "Priya"),
    ("Joaquín was late again this morning.", "Joaquín"),
    ("Margarethe has the keys to the archive.", "Margarethe"),
])
def test_a_name_alone_at_the_start_of_a_sentence(detector, text, name):
    assert ("PERSON", name) in found(detector, text)


@pytest.mark.parametrize("text, name", [
    ("hello, my name is josé garcía and I lost my card", "josé garcía"),
    ("Hi, my name is jürgen müller, can you help?", "jürgen müller"),
    ("my name is zoë", "zoë"),
    ("My name is Åsa Lindqvist.", "Åsa Lindqvist"),
])
def test_lower_case_and_diacritics_after_my_name_is(detector, text, name):
    assert ("PERSON", name) in found(detector, text)


@pytest.mark.parametrize("text, name", [
    ("maybe it's under Aoife Byrne", "Aoife Byrne"),
    ("I think the booking is under Tomasz Kowalczyk.", "Tomasz Kowalczyk"),
])
def test_a_name_after_a_verb_phrase(detector, text, name):
    assert ("PERSON", name) in found(detector, text)


@pytest.mark.parametrize("text, name", [
    ("Police detained tennis player Stan Wawrinka over an unpaid fine.", "Stan Wawrinka"),
    ("Authorities questioned striker Kylian Mbappé about the transfer.", "Kylian Mbappé"),
    ("The court fined singer Ana Torroja for tax evasion on Monday.", "Ana Torroja"),
])
def test_a_name_in_a_news_sentence(detector, text, name):
    assert any(t == "PERSON" and name in v for t, v in found(detector, text))


@pytest.mark.parametrize("text, name", [
    # Morrison and Harrington are surnames and towns: a quotation makes them people
    ('"Prices will not fall before spring," says Morrison.', "Morrison"),
    ('"We are not done yet," said Harrington.', "Harrington"),
])
def test_a_known_name_a_quotation_is_attributed_to(detector, text, name):
    assert ("PERSON", name) in found(detector, text)


@pytest.mark.parametrize("text, place", [
    # known names that are places, after a verb but not quoting anyone ("said Paris would
    # host" is still a person, by the known-given-name-before-a-verb rule: a known limit)
    ("We added Sydney as a region last week.", "Sydney"),
    ("He told Jordan's ministry about the delay.", "Jordan"),
    ("according to Harrington council, the road is closed", "Harrington"),
])
def test_a_place_name_after_a_verb_without_a_quotation_is_no_person(detector, text, place):
    assert ("PERSON", place) not in found(detector, text), found(detector, text)


@pytest.mark.parametrize("text", [
    "he said Microsoft would ship the fix",
    "according to Reuters, the deal is off",
    "The rate fell, said Monday's report.",
])
def test_speech_attributed_to_no_known_name_is_no_person(detector, text):
    assert not any(t == "PERSON" for t, _ in found(detector, text)), found(detector, text)


# Cues only a person fits need no known name (written by hand; the names are in no list but
# "Jensen", which the middle-initial shape needs, and the model alone misses each of them in
# these sentences: it calls them places or firms, or nothing).
@pytest.mark.parametrize("text, name", [
    ("Hi Tamaz, the scan results are attached.", "Tamaz"),
    ("We spoke with Brekkan's daughter about the bill.", "Brekkan"),
    ("Please add my nephew Kvirikashvili to the policy.", "Kvirikashvili"),
    ("Vaiana, could you sign the consent form today?", "Vaiana"),
    ("Why now? asked Mahina at the meeting.", "Mahina"),
    ("Please forward the file to Oyelaran's address in Lagos.", "Oyelaran"),
    ("Unlike the Ruairidh novel, this one is short.", "Ruairidh"),
    ("Tamaz K Jensen from Cornerstone Building Brands called.", "Tamaz K Jensen"),
    ("Kvirikashvili packed his bags and left.", "Kvirikashvili"),
    # and some the model may find itself, kept as regressions
    ("Thandeka Mbeki-Zulu, the chief nurse, said the ward is full.", "Thandeka Mbeki-Zulu"),
    ("Ticket 4471\nName: Oyelaran T Adebayo-Kuti\nPhone: 0803 555 0199", "Oyelaran T Adebayo-Kuti"),
    ("The clerk had given Tavita her password by mistake.", "Tavita"),
    ("Mahina Tarni listed her concerns.", "Mahina Tarni"),
])
def test_a_name_only_a_person_cue_fits(detector, text, name):
    # (also a given name, an initial and a surname: the shape of a name)
    assert ("PERSON", name) in found(detector, text), found(detector, text)


@pytest.mark.parametrize("text", [
    "Hi Team, the build is green.",
    "Monday, can you call the pharmacy?",
    "Dear Customer, your order has shipped.",
    "Hello France, can you hear us?",
    "Sales, the largest unit, said no.",
    "Hello I moved, please update my address.",
    "Status: open\nUser: Admin",
    "IPv6's address space is large.",
    "Oxford awarded her a degree in 2019.",
    # firms and products next to cues a firm fits too (review of 2026-11-27)
    "Equinor, the Norwegian energy company, said profits rose.",
    "Please send the invoice to Equinor's address in Stavanger.",
    "Kubernetes was born at Google in 2014.",
    "Project Name: Zephyrine\nDatabase Name: Northwind",
    "We watched the Serie A Juventus match.",
    "I loved the Discworld novels as a kid.",
])
def test_person_cues_do_not_make_words_or_places_persons(detector, text):
    assert not any(t == "PERSON" for t, _ in found(detector, text)), found(detector, text)


def test_a_word_an_initial_and_a_word_is_no_name(detector):
    for text in ("Vitamin D Receptor levels and Hepatitis B Vaccine uptake, see Section A Overview.",
                 "Der Zugang ist bei Gebäude C Eingang Nord."):
        assert not [f for f in detector.analyze(text) if f.recognizer == "name:initial"], text


def test_the_name_line_above_an_address_block_is_the_addressee(detector):
    text = "Tamaz Kvirikashvili\nOceanic Freight Ltd\n\n14 Rynek Główny 12\n Apt. 3\n Kraków\n Poland 31042"
    got = [(f.entity_type, text[f.start:f.end], f.recognizer) for f in detector.analyze(text)]
    assert ("PERSON", "Tamaz Kvirikashvili", "name:addressee") in got, got  # the model alone misses it
    got = found(detector, "Returns Department\n\n12 Oak Road Apt. 4\nBoston")
    assert not any(t == "PERSON" for t, _ in got), got


@pytest.mark.parametrize("text, firm", [
    ("Dreux Joly\nPaxata\nPSC 3294, Box 9168\nAPO AA 61487", "Paxata"),
    ("Cormac Allan\nEchocardiographer\nPlaceilivecom\n338 17 St Omers Road, Beauwelz, Belgium", "Placeilivecom"),
    ("Jane Doe\nHead of Procurement\nZentrix Labs\n12 High Street\nLondon SW1A 1AA", "Zentrix Labs"),
    ("Oline Mikaelsen\nRoadify Transit\n772 ul. Narutowicza 5\nWarszawa", "Roadify Transit"),  # the model: a person
    ("Zyxo Quarrn\r\nZentrix Labs\r\n12 High Street\r\nLondon SW1A 1AA", "Zentrix Labs"),  # CRLF
    ("Jane Doe\n*Paxata*\n12 High Street\nLondon SW1A 1AA", "Paxata"),  # without the markup
    ("> Ana Souza\n> Hawkins, Richardson and Santana\n> 14 Rua Augusta 20\n> Lisboa", "Hawkins, Richardson and Santana"),
    ("Jane Doe\nAmerican Red Ball Movers\n12 High Street\nLondon SW1A 1AA", "American Red Ball Movers"),  # English words
    ("Jane Doe\nApex Payment Systems\n12 High Street\nLondon SW1A 1AA", "Apex Payment Systems"),
    ("Dreux Joly\nZentrix Widgets (UK)\n338 Oak Avenue\nDallas, TX 75201", "Zentrix Widgets (UK)"),  # its brackets
    ("Dreux Joly\r\n\r\nPaxata\r\n\r\n338 Oak Avenue\r\nDallas, TX 75201", "Paxata"),  # CRLF blank lines
])
def test_the_line_between_the_addressee_and_the_street_is_the_firm(detector, text, firm):
    got = [(f.entity_type, text[f.start:f.end], f.recognizer) for f in detector.analyze(text)]
    assert ("ORGANIZATION", firm, "block:firm") in got, got
    assert not any(t == "PERSON" and (v in firm or firm in v) for t, v, _ in got), got


@pytest.mark.parametrize("line", [
    "Apartment 4B", "Level 5", "Warehouse 4", "Oak House", "The Old Rectory", "Headquarters",  # units, houses
    "Human Resources", "Accounts Payable", "Service Comptabilité",                          # departments
    "Senior Software Engineer", "Software Engineer II", "Data Analyst", "CEO", "Founder and CEO",
    "Paralegal", "Food preparation worker",                                                 # job titles
    "Germany", "John Doe", "Prof. Ahmed Khan", "John and Jane Smith", "Wei Zhang",          # places, people
])
def test_a_unit_a_department_a_job_title_a_place_or_a_person_above_the_street_is_no_firm(detector, line):
    text = f"Keith Brown\n{line}\n12 High Street\nLondon SW1A 1AA"
    got = [(f.entity_type, text[f.start:f.end]) for f in detector.analyze(text) if f.recognizer == "block:firm"]
    assert not got, got


def test_a_firm_needs_an_addressee_above_it(detector):
    text = "Returns Department\nOceanic Zentrix\n12 Oak Road Apt. 4\nBoston"
    assert not [f for f in detector.analyze(text) if f.recognizer == "block:firm"]


def test_a_second_addressee_the_model_found_stays_a_person(detector):
    text = "Keith Brown\nWei Zhang\n1 Microsoft Way\nRedmond, WA 98052"
    assert ("PERSON", "Wei Zhang") in found(detector, text), found(detector, text)


@pytest.mark.parametrize("text, firm", [
    ("I work for Flightstats", "Flightstats"),
    ("I used to work for Transparagov as Dairy scientist, but quit a few months ago.", "Transparagov"),
    ("She was employed by Kyruus Health until 2019.", "Kyruus Health"),
    ("I work for THALES/EQ", "THALES/EQ"),
    ("I work for Globex. I love it.", "Globex"),                      # the sentence ends the firm
    ("I worked for Zentrix and Maria Lopez hired me.", "Zentrix"),    # "and" ends it
    ("I worked for Acme Corp. She said it was fine.", "Acme Corp."),  # a legal form's full stop ends it
    ("I worked for Accenture and IBM.", "Accenture"),                 # two firms, not one
])
def test_the_capitalised_words_after_an_employment_cue_are_the_employer(detector, text, firm):
    got = [(f.entity_type, text[f.start:f.end], f.recognizer) for f in detector.analyze(text)]
    assert ("ORGANIZATION", firm, "cue:employer") in got, got


@pytest.mark.parametrize("text", [
    "I work with Python every day.",         # not an employment cue
    "He worked for Dr. Smith for years.",    # a person
    "I work for Maria Lopez.",               # a person's name
    "I worked for Nguyen on the campaign.",  # a surname
    "I worked at Heathrow for a year.",      # a place
    "We work at Home most Fridays.",         # English words
    "I worked at Customer Service for a year.",  # a department
    "I worked at 9am and 7AM.",              # times, numbers
    "I worked for 10 Years.",
    "Work For Hire Agreement",               # a heading, not a cue
    "I'm working at Stripe's Dublin office.",  # no possessive in a firm's words
    "She worked for Herr Schmidt in Hamburg.",  # a title before a name
    "I worked for Professor Smith.",
    "I was working at Christmas and Easter.",  # English words
    "He worked for the Estate of John Smith.",  # what is left before the name is no firm
    "I worked for the Bill & Melinda Gates Foundation.",  # a name inside: the model's call
])
def test_an_employment_cue_before_a_person_a_place_or_words_is_no_firm(detector, text):
    got = [f for f in detector.analyze(text) if f.recognizer == "cue:employer"]
    assert not got, [(f.entity_type, text[f.start:f.end]) for f in got]


def test_the_rules_after_the_model_keep_to_the_types_and_threshold_asked_for():
    only_persons = Detector(entities=["PERSON"])
    assert not [f for f in only_persons.analyze("I work for Flightstats.") if f.entity_type != "PERSON"]
    places = Detector(entities=["LOCATION", "STREET_ADDRESS"])
    text = "Dreux Joly\nPaxata\nPSC 3294, Box 9168\nAPO AA 61487"
    assert {f.entity_type for f in places.analyze(text)} <= {"LOCATION", "STREET_ADDRESS"}
    assert not [f for f in Detector(threshold=0.8).analyze("I work for Flightstats.") if f.score < 0.8]
    # and a name the model found is not lost to a firm rule that was not asked for
    assert ("PERSON", "Herr Schmidt") in found(only_persons, "She worked for Herr Schmidt in Hamburg.")


@pytest.mark.parametrize("text, name", [
    ('Heather: "Who are you?"\nHeather:"I\'m Daniel\'s daughter".', "Daniel"),
    ('Vanessa:"I\'m Cynthia\'s daughter".', "Cynthia"),
])
def test_a_model_span_run_over_a_speakers_colon_and_quote_is_split(detector, text, name):
    got = found(detector, text)
    assert ("PERSON", name) in got, got
    assert not any(":" in v or '"' in v for _, v in got), got


@pytest.mark.parametrize("text", [
    "custom changelog parsers as Dpkg::Changelog derived modules",
    '"git send-email" now uses Net::SMTP::SSL, which is obsolete',
    "xcscope - An (X)Emacs interface to cscope.",
    "Server Alpha Node:8080 is down.",
])
def test_code_notation_is_no_name(detector, text):
    got = found(detector, text)
    assert not any(t in ("PERSON", "ORGANIZATION", "LOCATION", "NRP") for t, _ in got), got


def test_a_mac_address_is_not_lost_to_a_model_span_split_at_its_colons(detector):
    text = "Laptop MAC de:15:51:e4:96:77, asset tag AT-824458."
    assert ("DEVICE_ID", "de:15:51:e4:96:77") in found(detector, text), found(detector, text)


def test_a_list_announced_as_people_takes_surnames_that_are_words(detector):
    got = found(detector, "The firm is the brainchild of our 3 founders: Guibord, Cannon and Moore.")
    assert {("PERSON", "Guibord"), ("PERSON", "Cannon"), ("PERSON", "Moore")} <= got, got
    got = found(detector, "The members: France, Germany and Italy.")
    assert not any(t == "PERSON" for t, _ in got), got


@pytest.mark.parametrize("text, number", [
    ("Call me on +41 (0)44 668 18 00 tomorrow.", "+41 (0)44 668 18 00"),
    ("You can reach me at 030 901820 during the day.", "030 901820"),
    ("My mobile is 079 123 45 67.", "079 123 45 67"),
    ("Phone: 0049 30 90182 0", "0049 30 90182 0"),
])
def test_international_and_configured_national_phone_numbers(text, number):
    detector = Detector(phone_regions=("CH", "DE"))
    assert ("PHONE_NUMBER", number) in found(detector, text)


@pytest.mark.parametrize("text, number", [
    ("Call me on +41 (0)69 979 80 58, please.", "+41 (0)69 979 80 58"),
    ("You can reach me at 432 03 163.", "432 03 163"),
    ("My number is 056 590 36 33 if anything changes. Call anytime.", "056 590 36 33"),
])
def test_the_phone_numbers_issue_15_quotes(text, number):
    # The issue's own examples, with regions a Swiss/German tenant would configure.
    assert ("PHONE_NUMBER", number) in found(Detector(phone_regions=("CH", "DE")), text)


def test_national_numbers_need_their_region_and_short_ones_a_context():
    text = "The code 030 901820 is printed on the box."
    assert not any(t == "PHONE_NUMBER" for t, _ in found(Detector(), text))  # US/GB only: not a phone
    assert ("PHONE_NUMBER", "030 901820") in found(Detector(phone_regions=("DE",)), text)
    # A phone word makes a number in phone-like groups a phone whatever the regions.
    for text, number in (("You can reach me at 030 901820.", "030 901820"),
                         ("Personal Info: Phone: 60-56-85-91  E-mail: x", "60-56-85-91"),
                         ("+41 (0)69 979 80 58-Fax", "+41 (0)69 979 80 58")):
        assert ("PHONE_NUMBER", number) in found(Detector(), text), text
    ch = Detector(phone_regions=("CH", "DE"))
    # An 8-digit German number without a trunk prefix is a phone only near a phone word.
    assert ("PHONE_NUMBER", "432 03 163") in found(ch, "Please call 432 03 163 after six.")
    assert not any(t == "PHONE_NUMBER" for t, _ in found(ch, "The archive holds 432 03 163 pages."))
    for text in ("Release 3.14.2 shipped on 2024-01-05.", "Host 10.0.12.7 answered.", "Total: 1,284,903.50"):
        assert not any(t == "PHONE_NUMBER" for t, _ in found(ch, text)), text


@pytest.mark.parametrize("text, address", [
    ("The office is on Via Pasquale Paoli 27 near the station.", "Via Pasquale Paoli 27"),
    ("Send it to Bergmannstraße 42, please.", "Bergmannstraße 42"),
    ("We moved to 14 rue des Lilas last year.", "14 rue des Lilas"),
    ("Ship to PSC 1234, Box 5678\nAPO AE 09876", "PSC 1234, Box 5678\nAPO AE 09876"),
])
def test_street_addresses_beyond_us_forms(detector, text, address):
    assert any(t == "STREET_ADDRESS" and address in v for t, v in found(detector, text))


def test_an_address_is_one_finding_with_its_unit_town_and_country(detector):
    text = "Deliver to 12 Oak Street, Apt. 4, Springfield, United States before noon."
    addresses = [v for t, v in found(detector, text) if t == "STREET_ADDRESS"]
    assert addresses == ["12 Oak Street, Apt. 4, Springfield, United States"]


@pytest.mark.parametrize("text, age", [
    ("Mr. Alves is a 54 year old man.", "54"),
    ("My brother just turned 49", "49"),
    ("She retired at the age of 61.", "61"),
    ("I'm 33 and live in Leeds.", "33"),
])
def test_ages_in_context(detector, text, age):
    assert ("AGE", age) in found(detector, text)


@pytest.mark.parametrize("text", ["He has 8+ years of experience.", "It took 5 years to build.", "Dosage 45 mg."])
def test_numbers_that_are_not_ages(detector, text):
    assert not any(t == "AGE" for t, _ in found(detector, text))


def test_dates_of_birth_and_years_in_context(detector):
    assert ("DATE_OF_BIRTH", "March 3, 1961") in found(detector, "She was born on March 3, 1961 in Leeds.")
    assert ("DATE_OF_BIRTH", "04/12/1979") in found(detector, "DOB: 04/12/1979")
    assert ("DATE_TIME", "March 3, 2024") in found(detector, "The audit closed on March 3, 2024.")
    assert ("DATE_TIME", "1983") in found(detector, "During 1983 the firm doubled.")


def test_people_places_organisations_and_groups_from_the_model(detector):
    text = "Last week Fatima Haddad flew from Lisbon to Nairobi for Contoso Ltd to meet Kenyan officials."
    got = found(detector, text)
    assert ("PERSON", "Fatima Haddad") in got
    assert {("LOCATION", "Lisbon"), ("LOCATION", "Nairobi")} <= got
    assert ("ORGANIZATION", "Contoso Ltd") in got
    assert ("NRP", "Kenyan") in got


def test_text_without_pii_stays_clean(detector):
    text = ("Run make install to build the package. The configure script checks for zlib and "
            "OpenSSL before it writes the Makefile. Release 3.14.2 fixes 27 defects; see the "
            "changelog for details. Use --prefix to install elsewhere. Quarterly revenue rose 4.5 "
            "percent. Please review the attached policy update before the next meeting.")
    assert found(detector, text) == set()


def test_ner_loads_offline_without_pytorch():
    code = ("import sys; from streams.pii import Detector; d = Detector(); "
            "f = d.analyze('Fatima Haddad flew from Lisbon to Nairobi.'); "
            "assert {x.entity_type for x in f} >= {'PERSON', 'LOCATION'}, f; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules; print('ok')")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_detector_without_ner_still_finds_cued_names():
    d = Detector(ner=False)
    assert not d.ner
    assert ("PERSON", "Aoife Byrne") in found(d, "Dear Aoife Byrne,")


def test_unknown_phone_region_is_refused():
    with pytest.raises(ValueError, match="unknown phone region"):
        Detector(phone_regions=("XX",))
    with pytest.raises(ValueError, match="unknown phone region"):
        PolicyConfig(phone_regions=("ZZ",))
    assert PolicyConfig(phone_regions=("de", "ch")).phone_regions == ("DE", "CH")


def test_hipaa_removes_places_below_a_state_and_ages_over_89_only(tmp_path, detector):
    text = "The patient, 93 years old, moved from Leeds to Texas in Ireland; her husband is 45 years old."
    d = decide(text, detector.analyze(text), SourcePolicy(frameworks=("HIPAA",)), KeyRing(tmp_path).key("t"))
    assert "Leeds" not in d.text and "[LOCATION]" in d.text
    assert "Texas" in d.text and "Ireland" in d.text
    assert "90+ years old" in d.text and "45 years old" in d.text


def test_gdpr_pseudonymizes_a_date_of_birth_and_keeps_places(tmp_path, detector):
    text = "Anna Berg, born 12 May 1984, works for Contoso Ltd in Lisbon."
    d = decide(text, detector.analyze(text), SourcePolicy(frameworks=("GDPR",)), KeyRing(tmp_path).key("t"))
    assert "12 May 1984" not in d.text and "[DATE_OF_BIRTH:" in d.text
    assert "Anna Berg" not in d.text
    assert "Lisbon" in d.text and "Contoso Ltd" in d.text
    h = decide(text, detector.analyze(text), SourcePolicy(frameworks=("HIPAA",)), KeyRing(tmp_path).key("t"))
    assert "born 1984" in h.text  # Safe Harbor keeps the year


# Names in their document (streams.pii.in_context), with other names than the labelled sets'.
@pytest.mark.parametrize("text, name", [
    ("My name is Oksana Petrenko, friends call me Oksana.", "Oksana"),  # the document's name again
    ("Halvard: Did the parcel arrive?\nIngunn: Not yet.", "Halvard"),  # transcript speakers
    ("The firm was started by three partners: Abernathy, Quintero and Nakamura.", "Quintero"),  # a list
    ("The report was written by Teodora Vukić last spring.", "Teodora Vukić"),  # "written by"
    ("What is your surname? Kowalczyk", "Kowalczyk"),
])
def test_names_found_from_the_rest_of_the_document(detector, text, name):
    assert ("PERSON", name) in found(detector, text)


@pytest.mark.parametrize("text, address", [
    ("Our warehouse is located at Industrivegen 14, near the port.", "Industrivegen 14"),
    ("She lives on Κολοκοτρώνη 9 with her sister.", "Κολοκοτρώνη 9"),
    ("Meet me at the corner of Juniper Terrace and Fifth.", "Juniper Terrace"),
])
def test_streets_after_an_address_cue(detector, text, address):
    assert ("STREET_ADDRESS", address) in found(detector, text)


# Written by hand in the forms real mail uses (not taken from a labelled set).
@pytest.mark.parametrize("text, address", [
    ("Send the forms to P.O. Box 4417, Fargo.", "P.O. Box 4417"),
    ("Antwort bitte an Postfach 1203, 80331 München.", "Postfach 1203"),
    ("das büro liegt am Karl-Liebknecht-Platz 3 in leipzig.", "Karl-Liebknecht-Platz 3"),
    ("A levelet a Petőfi Sándor tér 7. címre küldje.", "Petőfi Sándor tér 7"),
    ("the parcel went to psc 1021, box 77\napo ae 09012 last week", "psc 1021, box 77\napo ae 09012"),
    ("ingrid lives at 14 fjordgata 22 since may", "14 fjordgata 22"),
    ("Kontor: Rådhusvegen 12, Voss", "Rådhusvegen 12"),
    ("The parcel arrived at Laugavegur 18 this morning.", "Laugavegur 18"),
    ("The taxi drops you off at Vodičkova 36 by the tram stop.", "Vodičkova 36"),
])
def test_post_boxes_and_european_streets(detector, text, address):
    got = found(detector, text)  # the town after it may join the same finding
    assert any(t == "STREET_ADDRESS" and v.startswith(address) for t, v in got), got


# A street without a known suffix, confirmed by the postcode and town that follow it (the
# postal line of most of Europe), or by the town lines below a cued street: written by hand.
@pytest.mark.parametrize("text, address", [
    ("Please send it to Erbenova 1334, 500 03 Hradec Králové.", "Erbenova 1334"),
    ("Our office: Dosseringen 83, 2200 København N", "Dosseringen 83"),
    ("Write to Rynek Główny 1, 31-042 Kraków, Poland.", "Rynek Główny 1"),
    ("Adresse: Mühlenkamp 5\n22303 Hamburg", "Mühlenkamp 5"),
    ("Bitte an Grünauer Hof 12/3, A-1100 Wien schicken.", "Grünauer Hof 12/3"),
    ("it is 774 Ruská 13\nBemmel, GE 65692", "774 Ruská 13"),
    ("The parcel went to 7924 Dalsbakken 83\nMOSS\n Norway 81042 on Monday.", "7924 Dalsbakken 83"),
])
def test_a_street_confirmed_by_the_postcode_and_town_after_it(detector, text, address):
    got = found(detector, text)  # may start early: "Bitte an Grünauer Hof 12/3" (capitalised words before it)
    assert any(t == "STREET_ADDRESS" and address in v for t, v in got), got


@pytest.mark.parametrize("text", ["Windows 10, 2020 Edition", "Chapter 3, 1998 Berlin conference",
                                  "Version 2, 2022 Release", "see Table 4, 1200 Patients enrolled",
                                  "Total is 12 Apples\nBoston, MA 02115"])
def test_no_street_from_words_a_number_and_a_year_or_count(detector, text):
    assert not any(t == "STREET_ADDRESS" for t, _ in found(detector, text)), found(detector, text)


def test_an_iban_in_lower_case_and_a_hash_that_is_not_one(detector):
    assert ("IBAN_CODE", "de89 3704 0044 0532 0130 00") in found(detector, "iban: de89 3704 0044 0532 0130 00 thanks")
    assert not found(detector, "reverted in commit de34a1b2c3d4e5f6a7b8c9d0e1f2 yesterday")


@pytest.mark.parametrize("text", ["The meeting is on Monday 12 at noon.", "We live in Berlin 2 days a week.",
                                  "The fix is in Release 4 of the app.", "the bus drops you off at the stop 3",
                                  "it was moved to page 12 and then to page 14", "please meet me at noon on day 2",
                                  "We moved to pydantic 2 last year.", "send to stderr 2 and stdout 1",
                                  "listen address: localhost 8080", "Postbox 7.0.56 was released.",
                                  "The Blockade 3 film.", "GNU tee 8.32 copies its input.",
                                  "a Token-Ring 16 network", "We were dropped off at Terminal 2 and then at Gate 12.",
                                  "The train arrived at Platform 9 late.", "Please enter in Jira 2 tickets for this bug."])
def test_no_street_from_a_word_or_a_place_and_a_number(detector, text):
    assert not any(t == "STREET_ADDRESS" for t, _ in found(detector, text)), found(detector, text)


def test_places_stay_places_and_names_stay_names(detector):
    text = "Last winter she moved to Tromsø, and later she flew to Berlin to see Justin."
    got = found(detector, text)
    assert ("LOCATION", "Berlin") in got and ("PERSON", "Justin") in got, got
    assert ("PERSON", "Berlin") not in got and ("PERSON", "Tromsø") not in got, got


# Floors on the independent sets: measured values (docs/compliance.md) less a margin, so a
# change that loses recall or precision on text we did not write fails here.
PRESIDIO_REGIONS = ("CY", "EE", "ES", "DK", "NO", "TN", "IS", "AT", "US", "CH", "SI", "PL", "FI", "NL", "BE", "HU",
                    "ZA", "SE", "CZ", "NZ", "CA", "FR", "PT", "BR", "GB", "GL", "UY", "IT", "AU", "DE")


def test_independent_presidio_evaluator_set_floors():
    summary = evaluate(load(INDEPENDENT / "presidio_evaluator_1500.jsonl"),
                       Detector(phone_regions=PRESIDIO_REGIONS)).summary()
    per = summary["per_type"]
    assert summary["any_pii"]["recall"] >= 0.78 and summary["any_pii"]["precision"] >= 0.94, summary["any_pii"]
    assert per["PERSON"]["recall"] >= 0.92 and per["PERSON"]["precision"] >= 0.88, per["PERSON"]
    assert per["STREET_ADDRESS"]["recall"] >= 0.90, per["STREET_ADDRESS"]
    # Days of the week are dates since 2026-11-26 ("on Tuesday morning"); the set leaves a few
    # unlabelled ("the last Sunday before Labor Day"), so precision fell from 1.0 to 0.95.
    assert per["DATE_TIME"]["recall"] >= 0.95 and per["DATE_TIME"]["precision"] >= 0.92, per["DATE_TIME"]
    assert summary["structured"]["recall"] >= 0.94 and summary["structured"]["precision"] >= 0.94, summary["structured"]
    # Towns and countries on the lines of an address are LOCATION parts of the one
    # STREET_ADDRESS finding (docs/pii.md): this recall rose from 0.64 to 0.80 with them.
    loc_org = summary["location_organization"]
    assert loc_org["recall"] >= 0.77 and loc_org["precision"] >= 0.59, loc_org
    assert per["PHONE_NUMBER"]["recall"] >= 0.93, per["PHONE_NUMBER"]
    for t in ("CREDIT_CARD", "EMAIL_ADDRESS", "IBAN_CODE", "IP_ADDRESS", "US_SSN", "URL"):
        assert per[t]["recall"] >= 0.95 and per[t]["precision"] >= 0.95, (t, per[t])


def test_independent_presidio_research_set_floors(detector):
    """Microsoft's published set, scored with the default configuration (US/GB phone regions):
    measured 2026-11-26 (docs/compliance.md) less a margin. Nothing was tuned on it until the
    street-address rules of 2026-11-26 (second session), which read its misses too."""
    summary = evaluate(load(INDEPENDENT / "presidio_research_synth_v2.jsonl"), detector).summary()
    per = summary["per_type"]
    assert summary["structured"]["recall"] >= 0.94 and summary["structured"]["precision"] >= 0.94, summary["structured"]
    assert per["PHONE_NUMBER"]["recall"] >= 0.93 and per["PHONE_NUMBER"]["precision"] >= 0.95, per["PHONE_NUMBER"]
    assert summary["person"]["recall"] >= 0.84 and summary["person"]["precision"] >= 0.85, summary["person"]
    assert summary["location_organization"]["recall"] >= 0.69, summary["location_organization"]
    assert summary["any_pii"]["recall"] >= 0.83 and summary["any_pii"]["precision"] >= 0.94, summary["any_pii"]


def test_independent_opennlp_real_text_floors(detector):
    summary = evaluate(load(INDEPENDENT / "opennlp_real.jsonl"), detector).summary()
    assert summary["person"]["recall"] >= 0.85 and summary["person"]["precision"] >= 0.8, summary["person"]
    assert summary["location_organization"]["recall"] >= 0.85, summary["location_organization"]


# -- round 2 of issue 15: address blocks, dates and postcodes of other countries -------------

def test_an_address_block_is_one_finding_with_its_building_number_unit_town_and_country(detector):
    text = "Send it to:\n0815 Via Garibaldi 12\n Suite 4\n Borgo San Dalmazzo\n Italy 12011\nThanks"
    got = [(f.entity_type, text[f.start:f.end]) for f in detector.analyze(text)]
    assert ("STREET_ADDRESS", "0815 Via Garibaldi 12\n Suite 4\n Borgo San Dalmazzo\n Italy 12011") in got, got
    assert not any(t in ("LOCATION", "ORGANIZATION", "PERSON") for t, _ in got), got


def test_an_address_stops_at_a_sentence_a_name_and_a_zip(detector):
    got = found(detector, "He lives at 14 Birch Road, Ashford. Paul Ruiz was there.")
    assert ("STREET_ADDRESS", "14 Birch Road, Ashford") in got and ("PERSON", "Paul Ruiz") in got, got
    got = found(detector, "I live at 12 Oak Street, Springfield, IL 62704, USA.")
    assert ("ZIP_CODE", "62704") in got, got
    got = found(detector, "Meet me at 12 Oak Street, please call first.")
    assert ("STREET_ADDRESS", "12 Oak Street") in got, got


def test_a_unit_is_no_part_of_a_name(detector):
    got = found(detector, "Mrs. Ilse Brandt Apt. 12 4 Elm Road")
    assert ("PERSON", "Ilse Brandt") in got, got


@pytest.mark.parametrize("text, date", [
    ("Logged at 2019-06-02 17:45:09.123456 by the job", "2019-06-02 17:45:09.123456"),
    ("Erstellt am 3. Oktober 2018 in Bonn", "3. Oktober 2018"),
    ("Rendez-vous le 21 juin 2022.", "21 juin 2022"),
    ("Nació el 7 de agosto de 1990", "7 de agosto de 1990"),
    ("under the Data Protection Act of 2018", "2018"),
])
def test_dates_in_other_formats_and_languages(detector, text, date):
    assert ("DATE_TIME", date) in found(detector, text) or ("DATE_OF_BIRTH", date) in found(detector, text)


def test_an_iso_timestamp_is_no_phone_number(detector):
    got = found(detector, "When: 2020-02-30 08:15:00 and 2020-02-28 08:15:00")
    assert ("DATE_TIME", "2020-02-28 08:15:00") in got and not any(t == "PHONE_NUMBER" for t, _ in got), got
    assert ("DATE_TIME", "2020-02-30 08:15:00") not in got, got  # no such day


@pytest.mark.parametrize("text, code", [
    ("The depot in Uppsala 753 20 is closed.", "753 20"),
    ("Our office, Hauptstraße 4, in 04109 Leipzig.", "04109"),
    ("Rua Augusta 12\nLisboa LI 1100-053", "1100-053"),
    ("Kowalski\nSiedlce MZ 08110", "08110"),
])
def test_postcodes_of_other_countries_in_address_context(detector, text, code):
    got = {v for t, v in found(detector, text) if t in ("ZIP_CODE", "STREET_ADDRESS")}
    assert any(code in v for v in got), got


def test_no_postcode_in_ordinary_numbers_after_a_place(detector):
    got = found(detector, "Sales in Paris 2019 rose; see Room AB 12 in Windows 2000.")
    assert not any(t == "ZIP_CODE" for t, _ in got), got


def test_a_locative_word_does_not_make_a_full_name_a_place(detector):
    got = found(detector, "He spent a year as the assistant to Marik K. Wiśniewski in Gdańsk.")
    assert not any(t == "LOCATION" and "Wiśniewski" in v for t, v in got), got


@pytest.mark.parametrize("text, address", [
    ("Our office is at 41 Harbor Lane\n Suite 20\n Tampa\n United States", "41 Harbor Lane\n Suite 20\n Tampa\n United States"),
    ("Please return it to Karl Johans gate 22 Suite 4 OSLO Norway if it bounces.", "Karl Johans gate 22 Suite 4 OSLO Norway"),
    ("Ship to Rüütli 12 Apt. 3 Kärdla Estonia before May.", "Rüütli 12 Apt. 3 Kärdla Estonia"),
])
def test_an_address_takes_the_unit_town_and_country_the_model_names(detector, text, address):
    got = [(f.entity_type, text[f.start:f.end]) for f in detector.analyze(text)]
    assert ("STREET_ADDRESS", address) in got, got


def test_a_unit_word_needs_a_unit_number(detector):
    text = "Ship it to 12 Oak Road, Unit tests must pass first."
    got = [(f.entity_type, text[f.start:f.end]) for f in detector.analyze(text)]
    assert ("STREET_ADDRESS", "12 Oak Road") in got, got


def test_an_address_block_without_a_known_street_form(detector):
    text = "Contact:\n> Mira Jovanović\n> 2207 Šantićeva 14\n> Apt. 9\n> Mostar\n> Bosnia and Herzegovina 88000"
    got = [(f.entity_type, text[f.start:f.end]) for f in detector.analyze(text)]
    assert ("STREET_ADDRESS", "2207 Šantićeva 14\n> Apt. 9\n> Mostar\n> Bosnia and Herzegovina 88000") in got, got
    got = found(detector, "Chapter 12\nSpain won the match.\nResults 2024\nFrance")
    assert not any(t == "STREET_ADDRESS" for t, _ in got), got


def test_a_town_after_a_unit_on_the_same_line(detector):
    got = found(detector, "Post it to 18 Quarry Rd Apt. 7 KILMORE Australia, thanks.")
    assert ("STREET_ADDRESS", "18 Quarry Rd Apt. 7 KILMORE Australia") in got, got
    got = found(detector, "Post it to 18 Quarry Rd Apt. 7 Then call me.")
    assert ("STREET_ADDRESS", "18 Quarry Rd Apt. 7") in got, got


@pytest.mark.parametrize("text, age", [("My birthday is Sunday. I'll turn 67.", "67"), ("she will turn 90 in May", "90")])
def test_an_age_one_will_turn(detector, text, age):
    assert ("AGE", age) in found(detector, text)


def test_turning_by_degrees_is_no_age(detector):
    assert not any(t == "AGE" for t, _ in found(detector, "Then turn 90 degrees and you turn 3 pages."))
