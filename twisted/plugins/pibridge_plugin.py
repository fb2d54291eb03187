from twisted.application.service import ServiceMaker

pibridge = ServiceMaker(
    "pibridge", "pibridge.tap", "Run pi on this host for MoQ terminals and HTTP chat.", "pibridge"
)
