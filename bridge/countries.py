"""The country a WhatsApp user is in, from their number's E.164 calling code (ITU-T E.164's
list of assigned country codes, "Assigned country codes" in its annex) or from their BSUID.

Meta bills business-initiated calls by the callee's country ("Pricing" in Meta's calling
documentation), so a call's record names it. The table maps calling codes to ISO 3166-1 alpha-2
codes; the longest prefix of a number that is in it wins. Where a code is shared, the table
names the main country and the others it can tell apart by a longer prefix: +1 is the United
States but for Canada's area codes and the other NANP countries' (``1242`` the Bahamas, …), +7
is Russia but for Kazakhstan's ``76``/``77``. The few a prefix cannot tell apart (Jersey,
Guernsey and the Isle of Man in +44, the Åland Islands in +358, …) count as the main country.
A number that matches nothing (an unassigned code) has no country: ``None``."""

from __future__ import annotations

import re

_CANADA = (
    "204 226 236 249 250 263 289 306 343 354 365 367 368 382 387 403 416 418 428 431 437 438 "
    "450 460 468 474 506 514 519 548 579 581 584 587 600 604 613 639 647 672 683 705 709 742 "
    "753 778 780 782 807 819 825 867 873 879 902 905 942"
)
"""Canada's NANP area codes (the Canadian Numbering Administrator's list)."""

_NANP = (
    "242:BS 246:BB 264:AI 268:AG 284:VG 340:VI 345:KY 441:BM 473:GD 649:TC 658:JM 664:MS "
    "670:MP 671:GU 684:AS 721:SX 758:LC 767:DM 784:VC 787:PR 809:DO 829:DO 849:DO 868:TT "
    "869:KN 876:JM 939:PR"
)
"""The other NANP countries' area codes (the North American Numbering Plan Administrator's)."""

_CODES = (
    # zone 1 (the NANP: its area codes below) and zone 7
    "1:US 7:RU 76:KZ 77:KZ "
    # zone 2: Africa and a few islands
    "20:EG 211:SS 212:MA 213:DZ 216:TN 218:LY 220:GM 221:SN 222:MR 223:ML 224:GN 225:CI "
    "226:BF 227:NE 228:TG 229:BJ 230:MU 231:LR 232:SL 233:GH 234:NG 235:TD 236:CF 237:CM "
    "238:CV 239:ST 240:GQ 241:GA 242:CG 243:CD 244:AO 245:GW 246:IO 248:SC 249:SD 250:RW "
    "251:ET 252:SO 253:DJ 254:KE 255:TZ 256:UG 257:BI 258:MZ 260:ZM 261:MG 262:RE 263:ZW "
    "264:NA 265:MW 266:LS 267:BW 268:SZ 269:KM 27:ZA 290:SH 291:ER 297:AW 298:FO 299:GL "
    # zones 3 and 4: Europe
    "30:GR 31:NL 32:BE 33:FR 34:ES 350:GI 351:PT 352:LU 353:IE 354:IS 355:AL 356:MT 357:CY "
    "358:FI 359:BG 36:HU 370:LT 371:LV 372:EE 373:MD 374:AM 375:BY 376:AD 377:MC 378:SM "
    "380:UA 381:RS 382:ME 385:HR 386:SI 387:BA 389:MK 39:IT 40:RO 41:CH 420:CZ 421:SK "
    "423:LI 43:AT 44:GB 45:DK 46:SE 47:NO 48:PL 49:DE "
    # zone 5: Central and South America
    "500:FK 501:BZ 502:GT 503:SV 504:HN 505:NI 506:CR 507:PA 508:PM 509:HT 51:PE 52:MX "
    "53:CU 54:AR 55:BR 56:CL 57:CO 58:VE 590:GP 591:BO 592:GY 593:EC 594:GF 595:PY 596:MQ "
    "597:SR 598:UY 599:CW 5993:BQ 5994:BQ 5997:BQ "
    # zone 6: Southeast Asia and Oceania
    "60:MY 61:AU 62:ID 63:PH 64:NZ 65:SG 66:TH 670:TL 672:NF 673:BN 674:NR 675:PG 676:TO "
    "677:SB 678:VU 679:FJ 680:PW 681:WF 682:CK 683:NU 685:WS 686:KI 687:NC 688:TV 689:PF "
    "690:TK 691:FM 692:MH "
    # zone 8: East Asia
    "81:JP 82:KR 84:VN 850:KP 852:HK 853:MO 855:KH 856:LA 86:CN 880:BD 886:TW "
    # zone 9: West, Central and South Asia
    "90:TR 91:IN 92:PK 93:AF 94:LK 95:MM 960:MV 961:LB 962:JO 963:SY 964:IQ 965:KW 966:SA "
    "967:YE 968:OM 970:PS 971:AE 972:IL 973:BH 974:QA 975:BT 976:MN 977:NP 98:IR 992:TJ "
    "993:TM 994:AZ 995:GE 996:KG 998:UZ"
)


def _table() -> dict[str, str]:
    table = dict(pair.split(":") for pair in _CODES.split())
    table.update((f"1{code}", "CA") for code in _CANADA.split())
    table.update((f"1{pair[:3]}", pair[4:]) for pair in _NANP.split())
    return table


PREFIXES: dict[str, str] = _table()
"""E.164 prefix (calling code, or calling code and area code) → ISO 3166-1 alpha-2."""
COUNTRIES: frozenset[str] = frozenset(PREFIXES.values())
"""The ISO 3166-1 alpha-2 codes of every country with a calling code here."""
_LONGEST = max(map(len, PREFIXES))
BSUID = re.compile(r"^[A-Z]{2}\.(ENT\.)?[A-Za-z0-9]{1,128}$")
"""A business-scoped user id (Meta's BSUID: a country code, a dot, an opaque id of up to 128
characters) or a parent BSUID (``US.ENT.…``, shared by linked business portfolios): a user who
shows no phone number is named by it."""
_BSUID = re.compile(r"^([A-Z]{2})\.")
"""A BSUID starts with its user's country (:data:`BSUID`)."""


def country_of(user: str) -> str | None:
    """The ISO country of ``user``: E.164 digits (with or without ``+`` or the ``@…`` of a
    JID) by their longest known prefix, or a BSUID by the country it starts with; ``None``
    when unknown."""
    user = user.split("@", 1)[0].removeprefix("+")
    bsuid = _BSUID.match(user)
    if bsuid is not None:
        return bsuid.group(1)
    if not user.isdigit():
        return None
    for n in range(min(_LONGEST, len(user)), 0, -1):
        country = PREFIXES.get(user[:n])
        if country is not None:
            return country
    return None
