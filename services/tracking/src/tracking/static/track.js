// The buyer's map page: finds the order's shipment, draws its route, courier and destination on a
// Leaflet map, and follows the live stream (server-sent events), reconnecting by itself.
// Text from data (a city typed by a buyer) only ever goes into the page as text: textContent, or a DOM
// element for Leaflet (a string tooltip or popup is HTML to Leaflet). The page's CSP allows no inline script.
"use strict";
(() => {
  const config = JSON.parse(document.getElementById("track-config").textContent);
  // The order's access token travels in the page URL (query or fragment) and is passed on to the API.
  const query = new URLSearchParams(location.search);
  const fragment = new URLSearchParams(location.hash.slice(1));
  const token = query.get("token") || query.get("access_token") || fragment.get("token") || fragment.get("access_token");
  // fetch sends the token as a header; only EventSource, which cannot, puts it in the URL.
  const withToken = (url) => (token ? url + (url.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(token) : url);
  const authorized = token ? { headers: { Authorization: "Bearer " + token } } : {};
  const getJson = (url) => fetch(url, authorized);
  /** A DOM element holding ``text`` as text: what Leaflet's tooltips are given (never an HTML string). */
  const textElement = (text) => {
    const element = document.createElement("span");
    element.textContent = text;
    return element;
  };
  /** ``text`` escaped as HTML: what Leaflet's attributions are given (it takes them as HTML). */
  const escapedHtml = (text) => textElement(text).innerHTML;
  const $ = (id) => document.getElementById(id);
  const labels = {
    label_created: "Label created", picked_up: "Picked up", in_transit: "In transit",
    out_for_delivery: "Out for delivery", delivered: "Delivered", exception: "Delayed (exception)", cancelled: "Cancelled",
  };
  const connectionText = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", ended: "Finished", unavailable: "Unavailable" };

  // What the page shows, readable by tests and support tools (window.__trackState).
  const state = {
    shipmentId: null, status: null, statusText: "", etaText: "", etaNote: "",
    courier: null, destination: null, routePoints: 0, connection: "connecting", updates: 0,
    basemap: "off", // off (tiles instead) | loading | ready | failed
    zoom: null,
  };
  window.__trackState = state;

  // --- the map ---------------------------------------------------------------------------
  const mapElement = $("map");
  const map = L.map(mapElement, { zoomControl: true, attributionControl: true, maxZoom: 19 });
  if (config.tileUrl) {
    // Leaflet takes the attribution as HTML: the setting, plain text, goes in escaped.
    L.tileLayer(config.tileUrl, { maxZoom: 19, attribution: escapedHtml(config.tileAttribution || "") }).addTo(map);
  } else {
    mapElement.classList.add("no-tiles");
    if (config.basemap) drawBasemap(config.basemap);
  }
  L.control.scale({ imperial: false }).addTo(map);
  map.on("zoomend", () => { state.zoom = map.getZoom(); });
  map.setView([20, 0], 2);

  /** ``geojson`` whose lines cross the antimeridian (Chukotka, Fiji) run on past ±180° instead: Leaflet would draw
   * such a step as an edge across the whole world. A longitude of 190 is drawn just east of 180. */
  function unwrapped(geojson) {
    const line = (points) => {
      let shift = 0;
      return points.map(([lon, lat], i) => {
        if (i > 0 && Math.abs(lon - points[i - 1][0]) > 180) shift += lon < points[i - 1][0] ? 360 : -360;
        return [lon + shift, lat];
      });
    };
    const walk = (coordinates) => (typeof coordinates[0][0] === "number" ? line(coordinates) : coordinates.map(walk));
    const geometry = (g) => (g.coordinates && g.coordinates.length ? { ...g, coordinates: walk(g.coordinates) } : g);
    if (geojson.type === "FeatureCollection") {
      return { ...geojson, features: geojson.features.map((f) => ({ ...f, geometry: geometry(f.geometry) })) };
    }
    return geojson.type === "Feature" ? { ...geojson, geometry: geometry(geojson.geometry) } : geometry(geojson);
  }

  // The vendored Natural Earth basemap (tracking's static/vendor/natural-earth), from this origin only: land,
  // country borders, and cities (dots from zoom 3, names from zoom 5), in panes of their own under the route and
  // the markers (z-index in track.css). None of it takes a tap; a basemap that fails to load leaves the map as before.
  async function drawBasemap(basemap) {
    state.basemap = "loading";
    map.attributionControl.addAttribution(escapedHtml(basemap.attribution));
    map.createPane("basemap");
    map.createPane("basemap-labels");
    const drawn = { pane: "basemap", renderer: L.svg({ pane: "basemap" }), interactive: false };
    try {
      const [topology, places] = await Promise.all(
        [basemap.countries, basemap.places].map(async (url) => {
          const response = await fetch(url);
          if (!response.ok) throw new Error(url + ": " + response.status);
          return response.json();
        }),
      );
      L.geoJSON(unwrapped(topojson.feature(topology, topology.objects.land)), {
        ...drawn, className: "basemap-land", style: { color: "#b7cfd9", weight: 1, fillColor: "#f3f0e8", fillOpacity: 1 },
      }).addTo(map);
      // Borders: the arcs two countries share (a !== b), drawn once; coasts are the land's own outline.
      L.geoJSON(unwrapped(topojson.mesh(topology, topology.objects.countries, (a, b) => a !== b)), {
        ...drawn, className: "basemap-border", style: { color: "#a594b3", weight: 1, dashArray: "4 3", fill: false },
      }).addTo(map);
      const cities = L.layerGroup();
      for (const place of places.features) {
        const [lon, lat] = place.geometry.coordinates;
        L.circleMarker([lat, lon], {
          ...drawn, className: "basemap-city", radius: 3, weight: 1, color: "#fff", fillColor: "#5b6670", fillOpacity: 1,
        }).bindTooltip(textElement(String(place.properties.name)), {
          pane: "basemap-labels", permanent: true, direction: "right", offset: [4, 0], className: "city-label",
        }).addTo(cities);
      }
      const showCities = () => {
        const zoom = map.getZoom();
        if (zoom >= 3) cities.addTo(map);
        else cities.remove();
        mapElement.classList.toggle("show-city-labels", zoom >= 5);
      };
      map.on("zoomend", showCities);
      showCities();
      state.basemap = "ready";
    } catch (err) {
      state.basemap = "failed"; // the route, the courier and the destination still show on the plain ground
    }
  }

  const routeLine = L.polyline([], { color: "#1d9bf0", weight: 4, opacity: 0.85 }).addTo(map);
  let route = []; // [{lat, lon, t}] oldest first; t = recorded_at in ms
  let courierMarker = null;
  let destinationMarker = null;
  // Once the buyer pans the map themselves, updates stop re-fitting it under their finger.
  let buyerMovedMap = false;
  map.on("dragstart", () => { buyerMovedMap = true; });

  function fit() {
    if (buyerMovedMap) return;
    const points = route.map((p) => [p.lat, p.lon]);
    if (courierMarker) points.push(courierMarker.getLatLng());
    if (destinationMarker) points.push(destinationMarker.getLatLng());
    if (points.length === 1) map.setView(points[0], 15);
    else if (points.length > 1) map.fitBounds(L.latLngBounds(points), { padding: [36, 36], maxZoom: 16 });
  }

  function drawRoute() {
    routeLine.setLatLngs(route.map((p) => [p.lat, p.lon]));
    state.routePoints = route.length;
  }

  function extendRoute(point) {
    const t = Date.parse(point.recorded_at);
    if (route.length && t <= route[route.length - 1].t) return; // older than the route's end: not a step forward
    route.push({ lat: point.lat, lon: point.lon, t });
    drawRoute();
  }

  function replaceRoute(points) {
    const fetched = points.map((p) => ({ lat: p.lat, lon: p.lon, t: Date.parse(p.recorded_at) }));
    const end = fetched.length ? fetched[fetched.length - 1].t : -Infinity;
    // Live points that arrived while the route was loading are newer than what it returned: keep them.
    route = fetched.concat(route.filter((p) => p.t > end));
    drawRoute();
  }

  function placeMarkers(s) {
    const dest = s.destination;
    if (!destinationMarker) {
      destinationMarker = L.marker([dest.lat, dest.lon], { title: "Destination", alt: "Destination" })
        // Above the pin: a long city wraps there instead of running off the side of a phone's screen.
        .bindTooltip(textElement(dest.city + ", " + dest.country), {
          className: "destination-label", direction: "top", offset: [-16, -14],
        })
        .addTo(map);
    }
    state.destination = { lat: dest.lat, lon: dest.lon };
    const p = s.last_location;
    if (!p) return;
    if (!courierMarker) {
      courierMarker = L.circleMarker([p.lat, p.lon], {
        radius: 9, color: "#fff", weight: 3, fillColor: "#e0245e", fillOpacity: 1,
      }).bindTooltip(textElement("Courier"), { className: "courier-label" }).addTo(map);
    } else {
      courierMarker.setLatLng([p.lat, p.lon]);
    }
    const at = courierMarker.getLatLng();
    state.courier = { lat: at.lat, lon: at.lng };
  }

  // --- the panel -------------------------------------------------------------------------
  function setConnection(name) {
    state.connection = name;
    const element = $("connection");
    element.dataset.state = name;
    element.textContent = connectionText[name];
  }

  function render(s) {
    $("message").hidden = true;
    $("details").hidden = false;
    state.status = s.status;
    state.statusText = labels[s.status] || s.status;
    $("status").textContent = state.statusText;
    let eta = "not known yet";
    let note = "";
    if (s.status === "delivered" && s.delivered_at) {
      eta = "Delivered " + new Date(s.delivered_at).toLocaleString();
    } else if (s.status === "cancelled") {
      eta = "–";
    } else if (s.eta) {
      eta = "around " + new Date(s.eta.estimated_arrival).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      note = "estimate · " + (s.eta.remaining_m / 1000).toFixed(1) + " km to go";
    }
    state.etaText = eta;
    state.etaNote = note;
    $("eta").textContent = eta;
    $("eta-note").textContent = note;
    const p = s.last_location;
    $("last-location").textContent = p
      ? p.lat.toFixed(5) + ", " + p.lon.toFixed(5) + " at " + new Date(p.recorded_at).toLocaleTimeString()
      : "not picked up yet";
    $("destination").textContent = s.destination.city + ", " + s.destination.country;
    placeMarkers(s);
    if (p) extendRoute(p);
    fit();
    state.updates += 1;
  }

  // --- data ------------------------------------------------------------------------------
  async function loadRoute(shipmentId) {
    try {
      const response = await getJson("/shipments/" + encodeURIComponent(shipmentId) + "/locations");
      if (!response.ok) return;
      replaceRoute((await response.json()).points);
      fit();
    } catch (err) {
      // The live stream still draws from here on; the next reconnect loads the route again.
    }
  }

  function follow(shipmentId) {
    let source = null;
    let retryDelay = 1000;
    let ended = false;

    const connect = () => {
      source = new EventSource(withToken("/shipments/" + encodeURIComponent(shipmentId) + "/stream"));
      source.addEventListener("snapshot", (e) => {
        setConnection("live");
        retryDelay = 1000;
        render(JSON.parse(e.data));
        // Points sent while we were away are only in the history: fill the gap.
        loadRoute(shipmentId);
      });
      // An update carries the fixes since the previous one: the route grows by all of them.
      const update = (e) => {
        const data = JSON.parse(e.data);
        setConnection("live");
        for (const point of data.points || []) extendRoute(point);
        render(data);
      };
      source.addEventListener("location", update);
      source.addEventListener("status", (e) => {
        update(e);
        // The stream re-read the shipment: fixes it skipped as older are in the history.
        loadRoute(shipmentId);
      });
      source.addEventListener("end", () => {
        ended = true;
        source.close();
        setConnection("ended");
      });
      source.onerror = () => {
        if (ended) return;
        setConnection("reconnecting");
        // EventSource retries network errors itself; after an HTTP error it gives up (CLOSED): retry ourselves.
        if (source.readyState === EventSource.CLOSED) {
          setTimeout(connect, retryDelay);
          retryDelay = Math.min(retryDelay * 2, 30000);
        }
      };
    };
    connect();
  }

  async function start() {
    try {
      const response = await getJson("/shipments?order_id=" + encodeURIComponent(config.orderId));
      if (response.ok) {
        const shipments = await response.json();
        if (shipments.length > 0) {
          const shipment = shipments[0];
          state.shipmentId = shipment.id;
          render(shipment);
          await loadRoute(shipment.id);
          follow(shipment.id);
          return;
        }
        $("message").textContent = "Your order is paid; the shipment is being prepared…";
      } else {
        $("message").textContent = "This shipment cannot be shown (" + response.status + ").";
        if (response.status === 401 || response.status === 403 || response.status === 404) {
          setConnection("unavailable");
          return;
        }
      }
    } catch (err) {
      $("message").textContent = "Cannot reach the tracking service; retrying…";
      setConnection("reconnecting");
    }
    setTimeout(start, 2000);
  }
  start();
})();
