{{ config(unique_key='series_pseudo_uid') }}
-- depends_on: {{ source('build', 'build_files') }}
-- depends_on: {{ ref('internal_anonymization_rules') }}
-- depends_on: {{ ref('internal_column_types') }}
-- depends_on: {{ ref('stg_phi_terms') }}
{#- The column list and the pseudonym joins come from the internal_anonymization_rules seed (macros/deid.sql). #}
with series as (
    select * from {{ ref('stg_series') }} as series
    {% if is_incremental() %}
    where {{ study_in_build('series') }} or {{ descriptor_has_new_term('series', 'series') }}
    {% endif %}
),

base as (
    select
        series.*,
        studies.patient_key
    from series
    left join {{ ref('stg_studies') }} as studies on series.study_instance_uid = studies.study_instance_uid
),

deidentified as (
    select
        {{ deid_columns('series', 'base') }},
        base.ingested_at,
        {{ deid_provenance() }}
    from base
    {{- deid_joins('series', 'base', patient_key='patient_key') }}
)

select * from deidentified
