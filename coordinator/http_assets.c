/* coordinator/http_assets.c — the files the dashboard serves, embedded at build time by
 * coordinator/embed.cmake: the page (coordinator/dashboard/) and Chart.js from the Debian package
 * libjs-chart.js. Nothing is fetched from elsewhere at run time. */
#include "http_internal.h"

extern const unsigned char coord_http_asset_index_html[], coord_http_asset_app_js[], coord_http_asset_app_css[],
    coord_http_asset_chart_js[];
extern const size_t coord_http_asset_index_html_len, coord_http_asset_app_js_len, coord_http_asset_app_css_len,
    coord_http_asset_chart_js_len;

const coord_http_asset coord_http_assets[] = {
    {"/", "text/html; charset=utf-8", coord_http_asset_index_html, &coord_http_asset_index_html_len},
    {"/app.js", "text/javascript; charset=utf-8", coord_http_asset_app_js, &coord_http_asset_app_js_len},
    {"/app.css", "text/css; charset=utf-8", coord_http_asset_app_css, &coord_http_asset_app_css_len},
    {"/static/chart.min.js", "text/javascript; charset=utf-8", coord_http_asset_chart_js, &coord_http_asset_chart_js_len},
};
const int coord_http_n_assets = (int)(sizeof coord_http_assets / sizeof coord_http_assets[0]);
