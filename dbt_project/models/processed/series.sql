with series as (
    select * from {{ ref('stg_series') }}
),

studies as (
    select study_instance_uid, patient_key from {{ ref('stg_studies') }}
),

deidentified as (
    select
        {{ pseudo_uid('series.series_instance_uid') }} as series_pseudo_uid,
        {{ pseudo_uid('series.study_instance_uid') }} as study_pseudo_uid,
        {{ hmac_sha256('series.device_key') }} as device_pseudo_id,
        series.modality,
        series.series_number,
        {{ shift_date('series.series_date', 'studies.patient_key') }} as series_date_shifted,
        series.series_time,
        series.body_part_examined,
        series.patient_position,
        series.laterality,
        {{ pseudo_uid('series.frame_of_reference_uid') }} as frame_of_reference_pseudo_uid
    from series
    left join studies on series.study_instance_uid = studies.study_instance_uid
)

select * from deidentified
